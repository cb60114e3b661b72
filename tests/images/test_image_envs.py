"""Each image's Python environment, checked without a container engine:

- the package builds, complete, from exactly what the Dockerfile copies (a wheel);
- the image's extra resolves against the lock for the image's Python, with the base image's
  torch where it has one, to nothing but locked versions (`uv pip compile`, metadata only);
- every module its entrypoint can reach imports, and the entrypoint starts, in a venv that
  holds only that extra at the lock's versions; what other images need is absent there.

The venvs are built from uv's cache with hard links and kept in ~/.cache/longreach/image-venvs,
keyed by the lock, the extra and the Python version: a change to any of them builds anew, and
the package itself is reinstalled from this checkout on every run."""

from __future__ import annotations

import ast
import email
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from images.dockerfiles import (
    DOCKERFILES,
    EXTRAS,
    IDS,
    PYPROJECT,
    REPO,
    Dockerfile,
    lock_filter,
    stage_context,
)

pytestmark = pytest.mark.integration

UV = Path(sys.executable).parent / "uv"
LOCK = REPO / ".ci" / "requirements.lock"
CACHE = (
    Path(os.environ.get("LONGREACH_CACHE", Path.home() / ".cache" / "longreach")) / "image-venvs"
)
LAYERS = ("contract", "operator", "jobs")
# The module each image runs, and the argv that starts it with --help.
ENTRY = {
    "operator": ("longreach.operator.cli", ["-c", "import sys; from longreach.operator.cli import main; sys.exit(main(['operator', '--help']))"]),
    "data": ("longreach.jobs.mixture.__main__", ["-m", "longreach.jobs.mixture", "--help"]),
    "trainer": ("longreach.jobs.train.__main__", ["-m", "longreach.jobs.train", "--help"]),
    "eval": ("longreach.jobs.needle.__main__", ["-m", "longreach.jobs.needle", "--help"]),
}  # fmt: skip
# Imports the code guards, which the Dockerfile installs by other means (or on request).
# flash-attn and liger-kernel: GPU only (the trainer guards both); vllm: INSTALL_VLLM
OPTIONAL = {"trainer": {"flash_attn", "liger_kernel"}, "eval": {"vllm"}}
# What belongs to other images and must not be in this one.
ABSENT = {
    "operator": ["torch", "ray", "transformers", "deepspeed"],
    "data": ["torch", "transformers", "deepspeed", "kopf", "kubernetes"],
    "trainer": ["ray", "kopf", "kubernetes"],
    "eval": ["ray", "deepspeed", "kopf", "kubernetes"],
}


def locked() -> dict[str, str]:
    return dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", LOCK.read_text(), re.M))


def base_image(df: Dockerfile) -> str:
    first = df.all("FROM")[0].split()[0]
    args = df.global_args()
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args[m.group(1)], first)


def image_python(df: Dockerfile) -> str:
    """The Python minor version of the base image, from its tag."""
    base = base_image(df)
    if found := re.match(r"python:(3\.\d+)", base):
        return found.group(1)
    if found := re.search(r"-py3(\d+)", base):
        return f"3.{found.group(1)}"
    # pytorch/pytorch images are built by PyTorch's Dockerfile: ARG PYTHON_VERSION=3.11.
    assert base.startswith("pytorch/pytorch:"), f"the Python version of {base} is unknown"
    return "3.11"


def base_pins(df: Dockerfile) -> list[str]:
    """What the base image provides and the Dockerfile pins: torch in the pytorch images."""
    found = re.match(r"pytorch/pytorch:(\d+\.\d+\.\d+)-", base_image(df))
    return [f"torch=={found.group(1)}"] if found else []


def run(
    argv: list[str], timeout: float = 600, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)  # type: ignore[call-overload]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """image -> the wheel built from what its Dockerfile copies (one build per distinct copy)."""
    out: dict[str, Path] = {}
    built: dict[str, Path] = {}
    for path in DOCKERFILES:
        ctx = stage_context(
            Dockerfile.parse(path), tmp_path_factory.mktemp(f"ctx-{path.parent.name}")
        )
        package = sorted(p for top in ("pyproject.toml", "setup.py", "README.md", *LAYERS)
                         for p in ([ctx / top] if (ctx / top).is_file() else (ctx / top).rglob("*"))
                         if p.is_file())  # fmt: skip
        digest = hashlib.sha256(
            b"".join(p.relative_to(ctx).as_posix().encode() + p.read_bytes() for p in package)
        ).hexdigest()
        if digest not in built:
            dist = tmp_path_factory.mktemp("dist")
            # As pip builds it in the image, but against this venv's setuptools (offline).
            r = run([sys.executable, "-P", "-m", "pip", "wheel", "-q", "--no-deps",
                     "--no-build-isolation", "-w", str(dist), str(ctx)])  # fmt: skip
            assert r.returncode == 0, r.stderr
            (built[digest],) = dist.glob("longreach-*.whl")
        out[path.parent.name] = built[digest]
    return out


@pytest.mark.parametrize("image", IDS)
def test_the_image_builds_the_whole_package(wheels: dict[str, Path], image: str) -> None:
    with zipfile.ZipFile(wheels[image]) as whl:
        names = set(whl.namelist())
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        message = email.message_from_bytes(whl.read(metadata))
    expected = {
        f"longreach/{p.relative_to(REPO).as_posix()}"
        for top in LAYERS for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts
    }  # fmt: skip
    assert expected <= names, f"{image}: the wheel lacks {sorted(expected - names)[:5]}"
    assert message.get_payload().startswith("# Longreach"), "the README is not the description"


@pytest.mark.parametrize("image", IDS)
def test_the_extra_resolves_to_locked_versions(
    wheels: dict[str, Path], image: str, tmp_path: Path
) -> None:
    """What `pip install` in the image is asked for, resolved for the image's Python: the
    extra, with the lock as the Dockerfile applies it and the base image's torch."""
    df = Dockerfile.parse(REPO / "images" / image / "Dockerfile")
    skip = lock_filter(df)
    lock = [
        line for line in LOCK.read_text().splitlines() if "==" in line and not line.startswith("#")
    ]
    constraints = [line for line in lock if not (skip and skip.match(line))] + base_pins(df)
    (tmp_path / "constraints.txt").write_text("\n".join(constraints) + "\n")
    (tmp_path / "requirements.in").write_text(
        f"longreach[{EXTRAS[image]}] @ {wheels[image].as_uri()}\n"
    )
    r = run([str(UV), "pip", "compile", "-q", "--no-header", "--no-annotate",
             "--python-version", image_python(df), "-c", str(tmp_path / "constraints.txt"),
             str(tmp_path / "requirements.in")])  # fmt: skip
    assert r.returncode == 0, f"{image}: {r.stderr}"
    resolved = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)$", r.stdout, re.M))
    pins, lock_versions = dict(p.split("==") for p in base_pins(df)), locked()
    unlocked = {
        name: version for name, version in resolved.items()
        if name != "longreach" and lock_versions.get(name) != version
        and not (skip and skip.match(f"{name}==")) and pins.get(name) != version
    }  # fmt: skip
    assert not unlocked, f"{image} would install versions the lock does not hold: {unlocked}"


def import_closure(module: str) -> tuple[list[str], set[str]]:
    """The longreach modules `module` can reach through imports (in functions too), and the
    top-level names of the other packages they import."""

    def source(name: str) -> Path | None:
        parts = name.split(".")[1:]
        for candidate in (
            REPO.joinpath(*parts).with_suffix(".py"),
            REPO.joinpath(*parts, "__init__.py"),
        ):
            if parts and candidate.is_file():
                return candidate
        return None

    seen: dict[str, Path] = {}
    external: set[str] = set()
    todo = [module]
    while todo:
        name = todo.pop()
        path = source(name)
        if name in seen or path is None:
            continue
        seen[name] = path
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                assert node.level == 0, f"{path}: relative import"  # the package uses none
                targets = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                top = target.split(".")[0]
                if top == "longreach":
                    todo.append(target)
                elif top not in sys.stdlib_module_names and top != "__future__":
                    external.add(top)
    return sorted(seen), external


def image_venv(image: str, python: str, wheel: Path) -> Path:
    """A venv with the image's extra at the lock's versions, cached (see the module doc)."""
    interpreter = shutil.which(f"python{python}")
    if interpreter is None:
        pytest.skip(f"no python{python} here for the {image} image's venv")
    extra = EXTRAS[image]
    key = hashlib.sha256(json.dumps([LOCK.read_text(), PYPROJECT["project"]["dependencies"],
                                     PYPROJECT["project"]["optional-dependencies"][extra], python,
                                     ]).encode()).hexdigest()[:16]  # fmt: skip
    venv = CACHE / f"{image}-{key}"
    if (venv / "complete").exists():
        return venv
    for stale in CACHE.glob(f"{image}-*"):
        shutil.rmtree(stale)
    install = [str(UV), "pip", "install", "-q", "--python", str(venv / "bin" / "python"),
               "--link-mode", "hardlink", "--compile-bytecode", "-c", str(LOCK)]  # fmt: skip
    assert run([str(UV), "venv", "-q", "--python", interpreter, str(venv)]).returncode == 0
    requirements = [f"longreach[{extra}] @ {wheel.as_uri()}"]
    if any(r.startswith("deepspeed") for r in PYPROJECT["project"]["optional-dependencies"][extra]):
        # DeepSpeed is an sdist that builds against the installed torch (as .ci/setup does).
        r = run([*install, "torch", "setuptools", "wheel"])
        assert r.returncode == 0, r.stderr
        install += ["--no-build-isolation-package", "deepspeed"]
    r = run([*install, *requirements])
    assert r.returncode == 0, f"{image}: {r.stderr}"
    (venv / "complete").touch()
    return venv


@pytest.mark.parametrize("image", IDS)
def test_the_entrypoint_imports_with_only_its_extra(wheels: dict[str, Path], image: str) -> None:
    df = Dockerfile.parse(REPO / "images" / image / "Dockerfile")
    venv = image_venv(image, image_python(df), wheels[image])
    python = str(venv / "bin" / "python")
    r = run([str(UV), "pip", "install", "-q", "--python", python, "--no-deps", "--reinstall",
             str(wheels[image])])  # fmt: skip
    assert r.returncode == 0, r.stderr
    entry, argv = ENTRY[image]
    modules, external = import_closure(entry)
    code = (
        "import importlib, importlib.util, sys\n"
        f"for m in {modules + sorted(external - OPTIONAL.get(image, set()))!r}:\n"
        "    importlib.import_module(m)\n"
        f"absent = [m for m in {ABSENT[image]!r} if importlib.util.find_spec(m)]\n"
        "sys.exit(f'installed but not needed: {absent}' if absent else 0)\n"
    )
    # From /, with nothing of this checkout on sys.path: only the venv's packages.
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/"), "PYTHONSAFEPATH": "1"}
    r = run([python, "-P", "-c", code], env=env, cwd="/")
    assert r.returncode == 0, f"{image}: {r.stderr[-3000:]}"
    r = run([python, "-P", *argv], env=env, cwd="/")
    assert r.returncode == 0 and "usage" in r.stdout.lower(), f"{image}: {r.stderr[-3000:]}"
