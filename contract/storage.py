"""fsspec storage shared by the jobs and the operator: URIs, whole-file writes, JSON files.

Every `uri` is `s3://bucket/prefix`, `file:///abs/path` or a plain local path. S3 credentials
come from the standard AWS environment variables (the pod gets them from a Secret).
"""

from __future__ import annotations

import json
import os
import uuid
from typing import Any

import fsspec
from fsspec.core import url_to_fs

from longreach.contract.common import StorageSpec


def storage_options(uri: str, storage: StorageSpec | None = None) -> dict[str, Any]:
    """fsspec options for `uri`: the S3 endpoint, region, timeouts and retries from the spec;
    nothing for local files."""
    if not uri.startswith("s3://"):
        return {}
    storage = storage or StorageSpec()
    client: dict[str, Any] = {}
    if storage.endpoint:
        client["endpoint_url"] = storage.endpoint
    if storage.region:
        client["region_name"] = storage.region
    config = {
        "connect_timeout": storage.connectTimeout,
        "read_timeout": storage.readTimeout,
        "retries": {"max_attempts": storage.maxAttempts, "mode": storage.retryMode},
    }
    return {"client_kwargs": client, "config_kwargs": config}


def filesystem(
    uri: str, storage: StorageSpec | None = None
) -> tuple[fsspec.AbstractFileSystem, str]:
    """The filesystem holding `uri` and the path inside it."""
    return url_to_fs(uri, **storage_options(uri, storage))


def join(uri: str, *parts: str) -> str:
    """`uri` with path parts appended, keeping its scheme."""
    out = uri.rstrip("/")
    for part in parts:
        out = f"{out}/{part.strip('/')}"
    return out


def exists(uri: str, storage: StorageSpec | None = None) -> bool:
    fs, path = filesystem(uri, storage)
    return bool(fs.exists(path))


def read_json(uri: str, storage: StorageSpec | None = None) -> Any:
    fs, path = filesystem(uri, storage)
    with fs.open(path, "r") as f:
        return json.load(f)


def read_json_if_exists(uri: str, storage: StorageSpec | None = None) -> Any | None:
    """The JSON at `uri`, or None when there is none (yet)."""
    try:
        return read_json(uri, storage)
    except FileNotFoundError:
        return None


def write_bytes(uri: str, data: bytes, storage: StorageSpec | None = None) -> None:
    """Write a whole file so that readers never see half of it: S3 puts are atomic; local files
    are written beside the target and renamed over it."""
    fs, path = filesystem(uri, storage)
    parent = path.rsplit("/", 1)[0]
    if fs.protocol in ("file", ("file", "local")) or "file" in fs.protocol:
        os.makedirs(parent, exist_ok=True)
        tmp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def write_json(uri: str, obj: Any, storage: StorageSpec | None = None) -> None:
    write_bytes(uri, json.dumps(obj, indent=2, sort_keys=True).encode(), storage)
