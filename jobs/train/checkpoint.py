"""Resumable checkpoints under `<output>/checkpoints/step-NNNNNN/`.

DeepSpeed writes a checkpoint to a node-local staging folder; each node uploads what its ranks
wrote; then rank 0 writes `complete.json` into the folder. Only folders with that marker are
checkpoints, so a half-uploaded one is invisible and a restart resumes from the one before.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.jobs.train.model import upload_folder

MARKER = "complete.json"


def name(step: int) -> str:
    return f"step-{step:06d}"


def uri(output: str, step: int) -> str:
    return storage.join(output, "checkpoints", name(step))


def complete_steps(output: str, store: StorageSpec | None) -> list[int]:
    """Steps of the complete checkpoints, oldest first."""
    fs, path = storage.filesystem(storage.join(output, "checkpoints"), store)
    try:
        markers = fs.glob(f"{path}/step-*/{MARKER}")
    except FileNotFoundError:
        return []
    steps = []
    for m in markers:
        folder = m.rstrip("/").rsplit("/", 2)[1]
        if folder.startswith("step-") and folder[5:].isdigit():
            steps.append(int(folder[5:]))
    return sorted(steps)


def upload(staging: Path, output: str, step: int, store: StorageSpec | None) -> None:
    """Upload this node's part of a checkpoint, then free the local copy."""
    local = staging / name(step)
    upload_folder(local, uri(output, step), store)
    shutil.rmtree(local, ignore_errors=True)


def commit(output: str, step: int, state: dict[str, Any], store: StorageSpec | None) -> None:
    """Mark a fully uploaded checkpoint complete (rank 0, after every node uploaded)."""
    storage.write_json(storage.join(uri(output, step), MARKER), {"step": step, **state}, store)


def prune(output: str, keep: int, store: StorageSpec | None) -> None:
    """Delete all but the newest `keep` complete checkpoints, and incomplete leftovers older than
    the newest complete one (a crashed upload). Markers go first, so a deletion that stops half
    way leaves an invisible folder, never a broken checkpoint."""
    steps = complete_steps(output, store)
    if not steps:
        return
    fs, path = storage.filesystem(storage.join(output, "checkpoints"), store)
    newest = steps[-1]
    doomed = set(steps[:-keep])
    for entry in fs.ls(path, detail=False):
        folder = entry.rstrip("/").rsplit("/", 1)[1]
        if folder.startswith("step-") and folder[5:].isdigit():
            step = int(folder[5:])
            if step in doomed or (step < newest and step not in steps):
                if fs.exists(f"{entry}/{MARKER}"):
                    fs.rm(f"{entry}/{MARKER}")
                fs.rm(entry, recursive=True)


def download(output: str, step: int, staging: Path, store: StorageSpec | None) -> Path:
    """Copy a checkpoint to the node-local staging folder; returns the staging root."""
    fs, path = storage.filesystem(uri(output, step), store)
    local = staging / name(step)
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir(parents=True)
    fs.get(path.rstrip("/") + "/", str(local) + "/", recursive=True)
    return staging
