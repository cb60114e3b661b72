"""The Dockerfiles of images/, read without a container engine: their instructions, the
build context that .dockerignore lets through, and what each image copies and installs."""

from __future__ import annotations

import fnmatch
import re
import shlex
import shutil
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
# image folder -> the one extra of pyproject.toml it installs
EXTRAS = {"operator": "operator", "data": "data", "trainer": "train", "eval": "eval"}


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

    def env(self) -> list[tuple[str, str]]:
        """NAME=value pairs of the ENV instructions, in order."""
        return [
            tuple(word.split("=", 1))  # type: ignore[misc]
            for rest in self.all("ENV")
            for word in shlex.split(rest)
            if "=" in word
        ]

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


def copied_sources(df: Dockerfile) -> list[str]:
    """The repository paths the Dockerfile COPYs or ADDs from the build context."""
    sources: list[str] = []
    for rest in df.all("COPY") + df.all("ADD"):
        words = shlex.split(rest)
        if any(w.startswith("--from=") for w in words):
            continue  # from another stage
        sources += [w for w in words if not w.startswith("--")][:-1]
    return sources


def stage_context(df: Dockerfile, dest: Path) -> Path:
    """Copy what the Dockerfile copies from the context, less what .dockerignore keeps out,
    to `dest` at the same relative paths: the package exactly as the image builds it."""
    for source in copied_sources(df):
        path = REPO / source
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for f in files:
            relative = f.relative_to(REPO).as_posix()
            if not dockerignored(relative):
                (dest / relative).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(f, dest / relative)
    return dest


def run_commands(df: Dockerfile) -> str:
    """All RUN instructions, as one string."""
    return " ".join(df.all("RUN"))


def installed_extras(df: Dockerfile) -> list[str]:
    """The package extras the Dockerfile's `pip install ".[extra]"` lines install."""
    return re.findall(r"pip install[^&;]*?\"?\.\[([\w,-]+)\]\"?", run_commands(df))


def lock_filter(df: Dockerfile) -> re.Pattern[str] | None:
    """The `grep -vE PATTERN` the Dockerfile applies to the lock (lines it leaves out), if any."""
    found = re.search(r"grep -vE '([^']+)' \.ci/requirements\.lock", run_commands(df))
    return re.compile(found.group(1)) if found else None
