"""Types every kind shares: the model base (with CEL rules), token counts, storage, placement,
conditions and the status fields common to all."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    WithJsonSchema,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "longreach.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"


def rule(
    cel: str, message: str, field: str = ""
) -> Callable[[Callable[..., bool]], Callable[..., bool]]:
    """A cross-field check written once: `cel` goes into the CRD (x-kubernetes-validations),
    the decorated method runs in Python (local mode, the operator, the jobs). Both give
    `message`, which names the field and the fix."""

    def mark(check: Callable[..., bool]) -> Callable[..., bool]:
        check._cel = {
            "rule": cel,
            "message": message,
            **({"fieldPath": f".{field}"} if field else {}),
        }  # type: ignore[attr-defined]
        return check

    return mark


def cel_rules(cls: type) -> list[dict[str, str]]:
    """The CEL rules declared with @rule on a model class, in definition order."""
    seen: dict[str, dict[str, str]] = {}
    for klass in reversed(cls.__mro__):
        for name, value in vars(klass).items():
            if hasattr(value, "_cel"):
                seen[name] = value._cel
    return list(seen.values())


def _add_rules(schema: dict[str, Any], cls: type) -> None:
    rules = cel_rules(cls)
    if rules:
        schema["x-kubernetes-validations"] = rules


class Model(BaseModel):
    """Base of every spec model: camelCase on the wire, unknown fields rejected, docs from docstrings."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
        json_schema_extra=_add_rules,
    )

    @model_validator(mode="after")
    def _check_rules(self) -> Model:
        for klass in type(self).__mro__:
            for name, value in vars(klass).items():
                if hasattr(value, "_cel") and not getattr(self, name)():
                    field = value._cel.get("fieldPath", "").lstrip(".")
                    raise ValueError(
                        f"{field}: {value._cel['message']}" if field else value._cel["message"]
                    )
        return self

    def wire(self) -> dict[str, Any]:
        """The camelCase dict a user would write (and the API server stores)."""
        return self.model_dump(by_alias=True, mode="json")


_SUFFIX = {"": 1, "K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}
_TOKENS_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([KMBT]?)\s*$", re.IGNORECASE)
TOKENS_PATTERN = r"^[0-9]+(\.[0-9]+)?[KMBTkmbt]?$"


def parse_tokens(value: Any) -> int:
    """`5B` -> 5_000_000_000; plain integers pass through. Powers of ten, as API.md says."""
    if isinstance(value, bool):
        raise ValueError("expected a token count such as 5B, 4M or 4194304")
    if isinstance(value, int | float):
        if value != int(value):
            raise ValueError(f"token count {value} is not a whole number")
        n = int(value)
    else:
        m = _TOKENS_RE.match(str(value))
        if not m:
            raise ValueError(
                f"{value!r} is not a token count: write an integer or a number with a K/M/B/T "
                "suffix, e.g. 5B or 4M"
            )
        n = round(float(m.group(1)) * _SUFFIX[m.group(2).upper()])
    if n <= 0:
        raise ValueError(f"token count must be positive, got {value!r}")
    return n


def format_tokens(n: int) -> str:
    """The short human form of a token count: 5.0B, 4.2M, 812K."""
    for suffix, scale in (("T", 10**12), ("B", 10**9), ("M", 10**6), ("K", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f}{suffix}"
    return str(n)


# A token budget: an integer, or a string with a K/M/B/T suffix. In the CRD it is int-or-string.
Tokens = Annotated[
    int,
    BeforeValidator(parse_tokens),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": TOKENS_PATTERN, "minimum": 1}),
]


def rounded(digits: int) -> PlainSerializer:
    """Written with `digits` decimals (status, progress.json): what `kubectl get` shows."""
    return PlainSerializer(lambda v: round(v, digits), return_type=float, when_used="json")


Round1 = Annotated[float, rounded(1)]
Round3 = Annotated[float, rounded(3)]
Round4 = Annotated[float, rounded(4)]

QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
# A Kubernetes resource quantity (`8`, `500m`, `32Gi`); int-or-string in the CRD.
Quantity = Annotated[
    str,
    BeforeValidator(lambda v: str(v)),
    Field(pattern=QUANTITY_PATTERN),
    WithJsonSchema({"x-kubernetes-int-or-string": True, "pattern": QUANTITY_PATTERN}),
]

URI_DOC = "s3://bucket/prefix, file:///abs/path or a plain local path"


class StorageSpec(Model):
    """Where S3 lives and how to log in; empty values fall back to the operator's defaults."""

    endpoint: str = ""
    """S3 endpoint URL for MinIO, Ceph or another S3-compatible store; empty for AWS."""
    secretName: str = ""
    """Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, passed to the job as environment."""
    region: str = ""
    """S3 region; empty lets the client decide."""
    connectTimeout: float = Field(default=10, gt=0)
    """Seconds to wait for a connection to S3 before a try fails (and is retried)."""
    readTimeout: float = Field(default=60, gt=0)
    """Seconds to wait for S3 to answer a request before a try fails (and is retried)."""
    maxAttempts: int = Field(default=10, ge=1, le=100)
    """Tries per S3 request: refused connections, timeouts, throttling and 5xx answers are
    retried with exponential back-off (botocore's retry modes), about two minutes at 10."""
    retryMode: Literal["standard", "adaptive"] = "standard"
    """botocore's retry mode: standard, or adaptive (also slows down when throttled)."""

    def for_probes(self) -> StorageSpec:
        """The same store on a short leash (one retry, 3 s to connect, 10 s to answer): for
        the operator's reads, which must never hold up its reconciles."""
        return self.model_copy(update={"connectTimeout": 3, "readTimeout": 10, "maxAttempts": 2})

    def access_hint(self) -> str:
        """What to check when the store refuses or cannot be reached."""
        where = self.endpoint or "AWS S3"
        creds = (
            f"the credentials of Secret {self.secretName!r}"
            if self.secretName
            else "the credentials in the environment (no storage.secretName)"
        )
        return f"check the bucket and path, the endpoint ({where}) and {creds}"


class OutputSpec(Model):
    """Where a job writes its outputs."""

    uri: str = Field(min_length=1)
    """Output location: s3://bucket/prefix, file:///abs/path or a plain local path."""


class Toleration(Model):
    """A Kubernetes toleration, copied to the pods."""

    key: str = ""
    """Taint key to tolerate; empty with operator Exists tolerates everything."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists or Equal."""
    value: str = ""
    """Taint value, for operator Equal."""
    effect: Literal["", "NoSchedule", "PreferNoSchedule", "NoExecute"] = ""
    """Taint effect to tolerate; empty for all."""
    tolerationSeconds: int | None = None
    """How long a NoExecute taint is tolerated."""


class Placement(Model):
    """Where and how the job's pods run; shared by all three kinds."""

    editable: ClassVar[tuple[str, ...]] = (
        "suspend",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
    )
    """The spec fields that may change after creation; every other field is immutable (the CRD
    rejects the edit: delete and re-create the resource, or retry a failed one)."""

    image: str = ""
    """Container image for the job; empty uses the operator's default image for this kind."""
    queueName: str = ""
    """Kueue LocalQueue; set as the kueue.x-k8s.io/queue-name label on the child."""
    priorityClassName: str = ""
    """PriorityClass of the job's pods."""
    nodeSelector: dict[str, str] = {}
    """Node labels the job's pods must match."""
    tolerations: list[Toleration] = []
    """Taints the job's pods tolerate."""
    imagePullSecrets: list[str] = []
    """Names of Secrets used to pull the image."""
    podLabels: dict[str, str] = {}
    """Extra labels on the job's pods (cost allocation, policy selectors); Longreach's own
    labels win where a key is the same."""
    podAnnotations: dict[str, str] = {}
    """Extra annotations on the job's pods (a service mesh's or a monitoring agent's)."""
    suspend: bool = False
    """Suspend the job: running pods stop and resume later from where they were."""
    storage: StorageSpec = StorageSpec()
    """S3 endpoint, region and credentials Secret."""
    activeDeadlineSeconds: int | None = Field(default=None, ge=1)
    """Stop the job and fail once it has run this long; unset for no limit."""
    ttlSecondsAfterFinished: int | None = Field(default=None, ge=0)
    """Delete this resource (and its children) this long after it succeeded or failed."""


Phase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed", "Suspended"]
PHASES: tuple[str, ...] = ("Pending", "Waiting", "Running", "Succeeded", "Failed", "Suspended")


class Condition(Model):
    """A Kubernetes-style condition."""

    type: str
    """Ready, Succeeded, Failed or Waiting."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown."""
    reason: str = ""
    """A CamelCase reason, stable for machines."""
    message: str = ""
    """What happened, for people."""
    lastTransitionTime: str = ""
    """When status last changed (RFC 3339)."""
    observedGeneration: int = 0
    """The spec generation this condition was computed for."""


class StatusBase(Model):
    """Status fields every kind shares. Unknown keys are ignored when a status is read back
    (e.g. a dependency's status written by another operator version)."""

    model_config = ConfigDict(extra="ignore")

    phase: Phase = "Pending"
    """Pending, Waiting, Running, Succeeded, Failed or Suspended."""
    message: str = ""
    """One line on the current state: why it waits, why it failed."""
    conditions: list[Condition] = []
    """Ready, Succeeded, Failed and Waiting conditions."""
    observedGeneration: int = 0
    """The spec generation the status describes."""
    startTime: str = ""
    """When the job's child was created."""
    completionTime: str = ""
    """When the job succeeded or failed."""
    attempts: int = 0
    """How many times the job has been started (gang restarts included)."""
    retry: str = ""
    """The value of the longreach.io/retry annotation the operator last acted on: set the
    annotation to a new value to retry a Failed resource."""

    def percent(self) -> float:
        """How far the job is, 0-100 (each kind's status says where it keeps that)."""
        return 0.0
