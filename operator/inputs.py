"""Input checks before anything is created: a path that certainly does not exist is refused at
admission, with the field named, instead of failing in a pod (or, for a RayJob, which retries
every failure, failing three times). Only a store's own "not found" refuses: a path the
operator cannot read with its credentials (the resource names a Secret of its own, the store
denies access or does not answer) is left to the job, which reads it with the right ones."""

from __future__ import annotations

import functools
import time

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.kind import JobConfig
from longreach.contract.ownership import OWNER_FILE, decide, read_record
from longreach.operator.settings import OperatorSettings

GLOB = "*?["


@functools.cache
def s3_credentials() -> bool:
    """Whether the operator has S3 credentials at all (looked up once: without any, every
    request would first probe the instance metadata service, seconds each)."""
    import botocore.session

    try:
        return botocore.session.get_session().get_credentials() is not None
    except Exception:
        return False


def readable(uri: str, store: StorageSpec, settings: OperatorSettings) -> bool:
    """Whether the operator reads `uri` as the job will: a local path, or s3:// with the same
    credentials (the operator's own, when the resource names no Secret of its own)."""
    if uri.startswith("file://") or "://" not in uri:
        return not uri.startswith("builtin:")
    return (
        uri.startswith("s3://")
        and store.secretName == settings.storage.secretName
        and s3_credentials()
    )


def missing(uri: str, store: StorageSpec, settings: OperatorSettings) -> bool:
    """True only when the store says that nothing is at `uri` (a file, a prefix or a glob)."""
    if not readable(uri, store, settings):
        return False
    try:
        fs, path = storage.filesystem(uri, store.for_probes())
        if any(c in path for c in GLOB):
            return not fs.glob(path)
        return not fs.exists(path)
    except Exception:  # access denied, unreachable, malformed: not a verdict
        return False


def model_folder(field: str, uri: str) -> tuple[str, str, str]:
    """The check that `uri` is a Hugging Face model folder."""
    expected = "point it at a Hugging Face model folder (config.json, weights, tokenizer)"
    return field, storage.join(uri, "config.json"), expected


def first_missing(
    checks: list[tuple[str, str, str]], store: StorageSpec, settings: OperatorSettings
) -> str | None:
    """The refusal for the first (field, uri, what is expected there) that is missing."""
    for field, uri, expected in checks:
        if missing(uri, store, settings):
            return f"{field}: nothing at {uri}; {expected}"
    return None


def output_refusal(
    config: JobConfig, uri: str, store: StorageSpec, settings: OperatorSettings
) -> str | None:
    """Why the job would refuse its output location (another owner or config), read from the
    location's owner record before the job is created; None when it may go ahead or the
    operator cannot tell."""
    if not readable(uri, store, settings):
        return None
    try:
        record, _ = read_record(storage.join(uri, OWNER_FILE), store.for_probes())
    except Exception:
        return None
    verdict, why = decide(record, config.owner(), config.output_config(), time.time(), uri)
    return why if verdict == "refuse" else None
