"""Prometheus metrics of the operator: resources by kind and phase, transitions, reconcile
errors, handler latency. Served on settings.metricsPort at /metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

RESOURCES = Gauge("longreach_resources", "Longreach resources by kind and phase", ["kind", "phase"])
TRANSITIONS = Counter(
    "longreach_phase_transitions_total", "Phase transitions", ["kind", "from_phase", "to_phase"]
)
RECONCILE_ERRORS = Counter("longreach_reconcile_errors_total", "Reconciles that raised", ["kind"])
HANDLER_LATENCY = Histogram("longreach_handler_seconds", "Reconcile handler latency", ["kind"])

_phases: dict[tuple[str, str], str] = {}


def track(kind: str, key: str, phase: str) -> None:
    """Record the phase of one resource and refresh the per-phase gauge."""
    old = _phases.get((kind, key))
    if old == phase:
        return
    if old is not None:
        RESOURCES.labels(kind, old).dec()
    RESOURCES.labels(kind, phase).inc()
    _phases[(kind, key)] = phase


def forget(kind: str, key: str) -> None:
    """A resource was deleted."""
    old = _phases.pop((kind, key), None)
    if old is not None:
        RESOURCES.labels(kind, old).dec()
