"""Readers over fsspec URIs: list a source's files, then yield its documents one by one.

A source URI is a file, a prefix (every .jsonl / .jsonl.zst / .parquet below it) or a glob.
Each file yields `(index, text, domain)` for a good record, or `(index, None, reason)` for a
corrupt one, so callers count and locate corrupt lines without a second pass.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Container, Iterator
from dataclasses import dataclass
from typing import Any

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import SourceSpec
from longreach.contract.errors import InputError
from longreach.contract.storage import filesystem

SUFFIXES = (".jsonl.zst", ".jsonl", ".parquet", ".json.zst")
GLOB_CHARS = "*?["


@dataclass(frozen=True)
class FileUnit:
    """One input file: the unit of work of both passes."""

    source: int
    """Index of the source in spec.sources."""
    uri: str
    """The file's URI (s3://... or a local path)."""
    relpath: str
    """Path relative to the source's root: part of every document's identity."""
    format: str
    """jsonl, jsonl.zst or parquet."""
    size: int = 0
    """Stored bytes, to size the work before reading it."""


def file_format(path: str, declared: str) -> str | None:
    if declared != "auto":
        return declared
    if path.endswith((".jsonl.zst", ".json.zst")):
        return "jsonl.zst"
    if path.endswith(".jsonl"):
        return "jsonl"
    if path.endswith(".parquet"):
        return "parquet"
    return None


def _qualify(fs: Any, path: str) -> str:
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    if "s3" in protocols or "s3a" in protocols:
        return f"s3://{path}"
    return path


def list_files(index: int, source: SourceSpec, storage: StorageSpec | None) -> list[FileUnit]:
    """The files of one source, sorted; raises InputError when there are none or the store
    cannot be listed (credentials, bucket, endpoint)."""
    where = f"sources[{index}].uri {source.uri!r}"
    try:
        fs, path = filesystem(source.uri, storage)
        if any(c in path for c in GLOB_CHARS):
            root = path[: min(path.find(c) for c in GLOB_CHARS if c in path)].rsplit("/", 1)[0]
            found = {
                p: i.get("size") or 0
                for p, i in fs.glob(path, detail=True).items()
                if i.get("type") == "file"
            }
        elif fs.isfile(path):
            root = path.rsplit("/", 1)[0] if "/" in path else ""
            found = {path: fs.info(path).get("size") or 0}
        elif fs.isdir(path):
            found = {p: i.get("size") or 0 for p, i in fs.find(path, detail=True).items()}
            root = path.rstrip("/")
        else:
            raise InputError(f"{where}: nothing there; check the bucket, prefix and spelling")
    except (PermissionError, FileNotFoundError, ValueError, ImportError) as exc:  # not transient
        hint = (storage or StorageSpec()).access_hint()
        raise InputError(f"{where}: cannot list it ({type(exc).__name__}: {exc}); {hint}") from exc
    units = []
    for p in sorted(found):
        name = p.rsplit("/", 1)[-1]
        fmt = file_format(p, source.format)
        if name.startswith(".") or ".tmp-" in name or fmt is None:
            continue
        rel = p[len(root) :].lstrip("/") if root and p.startswith(root) else name
        units.append(FileUnit(index, _qualify(fs, p), rel, fmt, found[p]))
    if not units:
        raise InputError(
            f"{where}: no {' / '.join(SUFFIXES)} files found (looked at {len(found)} paths); "
            "point it at a file, a prefix or a glob of corpus files"
        )
    return units


@functools.cache
def _parts(path: str) -> tuple[str, ...]:
    return tuple(path.split("."))


def dotted(record: Any, path: str) -> Any:
    """`record["a"]["b"]` for path "a.b"; KeyError when a part is missing."""
    for part in _parts(path):
        if not isinstance(record, dict) or part not in record:
            raise KeyError(path)
        record = record[part]
    return record


def _zstd_lines(raw: Any) -> Iterator[bytes]:
    """Lines of a zstd stream (one frame or several); raises on a truncated stream, which
    a plain stream reader would end silently as if the file were shorter."""
    import zstandard

    dctx = zstandard.ZstdDecompressor()
    dobj, pending, finished = dctx.decompressobj(), b"", True
    while block := raw.read(1 << 20):
        while block:
            data = dobj.decompress(block)
            finished = dobj.eof
            block = dobj.unused_data if dobj.eof else b""
            if dobj.eof:
                dobj = dctx.decompressobj()
            *lines, pending = (pending + data).split(b"\n")
            yield from lines
    if not finished:
        raise ValueError("the zstd stream ends mid-frame: the file is truncated")
    if pending:
        yield pending


def _lines(unit: FileUnit, storage: StorageSpec | None) -> Iterator[bytes]:
    fs, path = filesystem(unit.uri, storage)
    with fs.open(path, "rb") as raw:
        if unit.format == "jsonl.zst":
            yield from _zstd_lines(raw)
        else:
            yield from raw


def _json(line: bytes) -> Any:
    """The record of a line; decoding UTF-8 first spares json.loads its encoding detection
    (a BOM is allowed), which it still does for anything else (UTF-16, UTF-32)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        return json.loads(line)
    return json.loads(text.removeprefix("\ufeff"))


def _parse(line: bytes, source: SourceSpec) -> tuple[str | None, str]:
    try:
        record = _json(line)
    except ValueError as exc:
        return None, f"not JSON ({exc})"
    try:
        text = dotted(record, source.textField)
    except KeyError:
        return None, f"no field {source.textField!r} (textField)"
    if not isinstance(text, str):
        return None, f"field {source.textField!r} is {type(text).__name__}, not a string"
    if source.domain:
        return text, source.domain
    try:
        domain = dotted(record, source.domainField)
    except KeyError:
        return None, f"no field {source.domainField!r} (domainField; or set domain)"
    return text, str(domain)


def _parquet_docs(
    unit: FileUnit, source: SourceSpec, storage: StorageSpec | None, wanted: Container[int] | None
) -> Iterator[tuple[int, str | None, str]]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    def column(batch: Any, dotted_path: str) -> list[Any]:
        top, *rest = dotted_path.split(".")
        if top not in batch.schema.names:
            raise InputError(
                f"{unit.uri}: no column {top!r} for {dotted_path!r}; columns: {batch.schema.names}"
            )
        col = batch.column(top)
        for part in rest:
            col = pc.struct_field(col, part)
        return col.to_pylist()

    fs, path = filesystem(unit.uri, storage)
    index = 0
    with fs.open(path, "rb") as f:
        for batch in pq.ParquetFile(f).iter_batches(batch_size=4096):
            texts = column(batch, source.textField)
            domains = (
                [source.domain] * len(texts) if source.domain else column(batch, source.domainField)
            )
            for text, domain in zip(texts, domains, strict=True):
                if wanted is not None and index not in wanted:
                    pass
                elif not isinstance(text, str):
                    yield index, None, f"{source.textField!r} is null or not a string"
                elif domain is None:
                    yield index, None, f"{source.domainField!r} is null"
                else:
                    yield index, text, str(domain)
                index += 1


def documents(
    unit: FileUnit,
    source: SourceSpec,
    storage: StorageSpec | None,
    wanted: Container[int] | None = None,
) -> Iterator[tuple[int, str | None, str]]:
    """`(index, text, domain)` per record, or `(index, None, reason)` for a corrupt one.
    The index is the 0-based line (or row) number; blank lines are skipped but counted.
    With `wanted`, only those lines (or rows) are parsed and yielded."""
    if unit.format == "parquet":
        yield from _parquet_docs(unit, source, storage, wanted)
        return
    for index, line in enumerate(_lines(unit, storage)):
        if (wanted is not None and index not in wanted) or not line or line.isspace():
            continue
        text, domain = _parse(line, source)
        yield index, text, domain


def check_first_record(unit: FileUnit, source: SourceSpec, storage: StorageSpec | None) -> None:
    """Fail early, naming the file and field, when a source's first record lacks the text
    or domain field: a wrong textField would otherwise surface as 100% corrupt lines."""
    try:
        first = next(iter(documents(unit, source, storage)), None)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(f"{unit.uri}: cannot read it ({type(exc).__name__}: {exc})") from exc
    if first is None:
        raise InputError(f"{unit.uri}: the file is empty")
    index, text, reason = first
    if text is None:
        raise InputError(
            f"{unit.uri} line {index + 1}: {reason}; set sources[{unit.source}].textField / "
            "domainField to the record's dotted paths"
        )
