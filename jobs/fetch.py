"""The one way a job gets a model folder onto its machine.

A local folder is used where it is. A remote one (s3://...) is copied once per node into a
cache folder: the first process takes a file lock and copies, the others wait on the lock and
find the copy complete. A marker written last records what was copied (every file's name,
size and ETag or mtime), so a changed model at the same URI is copied again.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
from pathlib import Path

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.errors import InputError

MARKER = ".longreach-fetched"


def fetch_model(uri: str, store: StorageSpec | None, cache: Path, *, field: str) -> str:
    """A local folder from which transformers can load the model at `uri`. `field` names the
    spec field the URI came from, for the error when it is not a model folder."""
    fs, path = storage.filesystem(uri, store)
    root = path.rstrip("/")
    if not fs.exists(f"{root}/config.json"):
        raise InputError(
            f"{field}: {uri} has no config.json; point it at a Hugging Face model folder "
            "(config.json, weights and tokenizer, as save_pretrained writes them)"
        )
    if "file" in fs.protocol or fs.protocol == "local":
        return root
    listing = sorted(
        (f[len(root) :], int(info.get("size") or 0), str(info.get("ETag") or info.get("mtime")))
        for f, info in fs.find(root, detail=True).items()
    )
    fingerprint = hashlib.sha256(json.dumps([uri, listing]).encode()).hexdigest()
    target = cache / "model"
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "model.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = target / MARKER
        if not marker.exists() or marker.read_text() != fingerprint:
            shutil.rmtree(target, ignore_errors=True)
            fs.get(root + "/", str(target) + "/", recursive=True)
            marker.write_text(fingerprint)
    return str(target)
