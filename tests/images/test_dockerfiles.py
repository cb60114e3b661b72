"""The Dockerfiles in images/, checked without a Docker engine: what they copy exists and
is not excluded by .dockerignore, bases are pinned, the user is a numeric non-root uid,
each installs only its own extra, and what the ENTRYPOINT/CMD runs exists and starts."""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# image folder -> the one extra of pyproject.toml it installs
EXTRAS = {"operator": "operator", "data": "data", "trainer": "train", "eval": "eval"}
# Imports a module may fail on here without it being the Dockerfile's fault.
HEAVY = ("torch", "deepspeed", "flash_attn", "ray", "vllm", "transformers", "pyarrow", "matplotlib")


@dataclass
class Dockerfile:
    """The instructions of a Dockerfile: (KEYWORD, arguments) after joining continuations."""

    path: Path
    instructions: list[tuple[str, str]] = field(default_factory=list)

    @classmethod
    def parse(cls, path: Path) -> Dockerfile:
        out = cls(path)
        logical = ""
        for line in path.read_text().splitlines():
            if not logical and (not line.strip() or line.lstrip().startswith("#")):
                continue
            if line.lstrip().startswith("#"):  # a comment inside a continued instruction
                continue
            if line.rstrip().endswith("\\"):
                logical += line.rstrip()[:-1] + " "
                continue
            logical += line
            keyword, _, rest = logical.strip().partition(" ")
            out.instructions.append((keyword.upper(), rest.strip()))
            logical = ""
        return out

    def all(self, keyword: str) -> list[str]:
        return [rest for k, rest in self.instructions if k == keyword]

    def global_args(self) -> dict[str, str]:
        """ARG defaults declared before the first FROM (usable in FROM lines)."""
        args: dict[str, str] = {}
        for keyword, rest in self.instructions:
            if keyword == "FROM":
                break
            if keyword == "ARG" and "=" in rest:
                name, _, value = rest.partition("=")
                args[name] = value.strip("\"'")
        return args

    def final_stage(self) -> list[tuple[str, str]]:
        starts = [i for i, (k, _) in enumerate(self.instructions) if k == "FROM"]
        return self.instructions[starts[-1] :]


DOCKERFILES = sorted((REPO / "images").glob("*/Dockerfile"))
IDS = [p.parent.name for p in DOCKERFILES]


def dockerignored(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent folder
    matches everything below it."""
    patterns = [
        line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]  # fmt: skip
    parts = Path(path).parts
    prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").strip("/")
        for prefix in prefixes:
            depth_free = pattern.startswith("**/") and fnmatch.fnmatchcase(
                prefix.split("/")[-1], pattern[3:]
            )
            same_depth = pattern.count("/") == prefix.count("/") and fnmatch.fnmatchcase(
                prefix, pattern
            )
            if depth_free or same_depth:
                ignored = not negate
                break
    return ignored


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
def test_copy_sources_exist_in_the_context(path: Path) -> None:
    df = Dockerfile.parse(path)
    copies = df.all("COPY") + df.all("ADD")
    assert copies, f"{path} copies nothing"
    for rest in copies:
        words = shlex.split(rest)
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage
        sources = [w for w in words if not w.startswith("--")][:-1]
        assert sources, rest
        for source in sources:
            assert (REPO / source).exists(), (
                f"{path.parent.name}: COPY {source}: not in the repository"
            )
            assert not dockerignored(source), (
                f"{path.parent.name}: COPY {source}: excluded by .dockerignore"
            )


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
def test_installs_only_its_own_extra(path: Path) -> None:
    installs = re.findall(
        r"pip install[^&;]*?\"?\.\[([\w,-]+)\]\"?", " ".join(Dockerfile.parse(path).all("RUN"))
    )
    assert installs == [EXTRAS[path.parent.name]], f"{path.parent.name} installs extras {installs}"
    assert installs[0] in PYPROJECT["project"]["optional-dependencies"]


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
