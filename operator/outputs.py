"""One output, one owner, checked before anything starts: the output locations of the resources
the operator knows (a kopf index per kind) and of the resources of a `longreach run` file.
Two resources whose outputs are equal or nested collide; the later one is refused."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


def output_key(uri: str) -> str:
    """A location in one spelling: no `file://`, no trailing slash."""
    return uri.removeprefix("file://").rstrip("/") or "/"


def nested(a: str, b: str) -> bool:
    """The same location, or one inside the other."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


@dataclass(frozen=True, order=True)
class Claimant:
    """A resource that writes to an output location; ordered by creation, then by name."""

    created: str
    kind: str
    namespace: str
    name: str
    uri: str = ""

    def describe(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


def _levels(uri: str) -> tuple[str, list[str]]:
    """A location in one spelling, and every location that contains it."""
    parts = output_key(uri).split("/")
    return "/".join(parts), ["/".join(parts[:i]) for i in range(1, len(parts))]


def index_keys(uri: str) -> list[tuple[str, str]]:
    """Where the operator's index files a resource writing to `uri`: at its location, and
    under each location that contains it."""
    key, above = _levels(uri)
    return [("at", key)] + [("under", a) for a in above]


def lookup_keys(uri: str) -> list[tuple[str, str]]:
    """The index entries that can collide with `uri`: resources at it or under it, and at
    each location that contains it (a lookup per path level, not a scan of every resource)."""
    key, above = _levels(uri)
    return [("at", key), ("under", key)] + [("at", a) for a in above]


def collision(me: Claimant, others: Iterable[Claimant]) -> Claimant | None:
    """The earliest other resource created before `me` whose output collides with mine."""
    mine = output_key(me.uri)
    before = [
        o
        for o in others
        if (o.kind, o.namespace, o.name) != (me.kind, me.namespace, me.name)
        and o < me
        and nested(output_key(o.uri), mine)
    ]
    return min(before, default=None)


def refusal(me: Claimant, other: Claimant) -> str:
    return (
        f"output.uri {me.uri} collides with the output of {other.describe()} ({other.uri}): "
        "one output, one owner; give this resource another output.uri (delete and re-create it)"
    )
