"""A strategy comparison (`longreach compare FILE.yaml`): one base model, one corpus, one budget,
several mixture strategies ("arms"), each extended and evaluated the same way.

The file is not a resource: it expands into one DataMixture, one ContextExtension and one
NeedleEval per arm and seed (operator/compare.py), which are the resources that run. The
training and eval blocks hold the fields those kinds share across arms; they are checked here
against the kinds' own spec models, so a mistake names its field before any work starts.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, ValidationError, field_validator, model_validator

from longreach.contract.common import Model, OutputSpec, StorageSpec, Tokens
from longreach.contract.contextextension import ContextExtensionSpec, ModelSource
from longreach.contract.datamixture import (
    DataMixtureSpec,
    SourceSpec,
    Strategy,
    StrategySpec,
    TokenizerSpec,
)
from longreach.contract.needleeval import NeedleEvalSpec

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
MAX_PREFIX = 40
"""name + arm (+ seed) stay this short, so the resources' names and their children's fit."""

LABEL_COMPARISON = "longreach.io/comparison"
LABEL_ARM = "longreach.io/arm"
LABEL_SEED = "longreach.io/seed"

# Fields of each kind that the comparison sets per arm and seed; the shared blocks may not.
TRAINING_OWN = ("model", "data", "output")
EVAL_OWN = ("model", "output")


class ArmSpec(Model):
    """One arm: a mixture strategy under a name."""

    name: str
    """The arm's name: a DNS label (lower-case letters, digits, '-'); it names the arm's resources and folder."""
    strategy: dict[str, Any]
    """The arm's DataMixture strategy block, e.g. {type: upsample-domains, domainShares: {RedPajamaBook: 0.55}}; merged over the comparison's shared strategy."""


def _field_errors(block: str, e: ValidationError) -> str:
    parts = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"])
        msg = str(err["msg"]).removeprefix("Value error, ")
        parts.append(f"{block}.{where}: {msg}" if where else f"{block}: {msg}")
    return "; ".join(parts)


class CompareSpec(Model):
    """A comparison of mixture strategies with the same base model, corpus, budget and grid."""

    name: str
    """The comparison's name (a DNS label); the label longreach.io/comparison on every resource."""
    model: ModelSource
    """The base model every arm extends."""
    sources: list[SourceSpec] = Field(min_length=1)
    """The corpus, as DataMixture sources."""
    tokenizer: TokenizerSpec
    """The model's tokenizer."""
    totalTokens: Tokens
    """Each arm's mixture budget, e.g. 500M."""
    sequenceLength: int = Field(ge=16, le=4194304)
    """Tokens per packed chunk (and the training sequence length unless training sets one)."""
    seeds: list[int] = Field(default=[15213], min_length=1, max_length=16)
    """Seeds of the mixture and of training; every arm runs once per seed."""
    strategy: dict[str, Any] = {}
    """Strategy fields shared by every arm (e.g. shortDocumentTokens); an arm's own block wins."""
    arms: list[str | ArmSpec] = Field(min_length=2)
    """The strategies compared: names (original, cut, global, per-source, upsample-domains) or {name, strategy} blocks."""
    validationFraction: float = Field(default=0.001, ge=0, lt=0.5)
    """Share of chunks held out per domain for the validation loss."""
    training: dict[str, Any]
    """ContextExtension spec fields shared by every arm (all but model, data and output)."""
    eval: dict[str, Any] = {}
    """NeedleEval spec fields shared by every arm (all but model and output)."""
    output: OutputSpec
    """The comparison's root: each arm writes under <root>/<arm>[/seed-N]/{mixture,model,needle}, the report under <root>."""
    storage: StorageSpec = StorageSpec()
    """S3 endpoint, region and credentials Secret, for every resource and the report."""

    @field_validator("name")
    @classmethod
    def _name_is_label(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a DNS label: use lower-case letters, digits and '-'")
        return v

    @field_validator("arms", mode="after")
    @classmethod
    def _arms_named(cls, arms: list[str | ArmSpec]) -> list[str | ArmSpec]:
        names = [a if isinstance(a, str) else a.name for a in arms]
        for n in names:
            if not DNS_LABEL.match(n):
                raise ValueError(
                    f"arm name {n!r} is not a DNS label: lower-case letters, digits, '-'"
                )
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"arm names must differ: {duplicates} repeat; name the blocks apart")
        return arms

    @field_validator("seeds")
    @classmethod
    def _seeds_differ(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds repeat: {seeds}")
        return seeds

    @model_validator(mode="after")
    def _blocks_valid(self) -> CompareSpec:
        longest = max(len(a) for a in self.arm_names())
        seed = max(len(f"-s{s}") for s in self.seeds) if len(self.seeds) > 1 else 0
        if len(self.name) + 1 + longest + seed > MAX_PREFIX:
            raise ValueError(
                f"name: {self.name!r} with the longest arm name and seed is over {MAX_PREFIX} "
                "characters; shorten the name or the arm names"
            )
        self.strategies()
        for block, own in (("training", TRAINING_OWN), ("eval", EVAL_OWN)):
            given = sorted(set(getattr(self, block)) & set(own))
            if given:
                raise ValueError(
                    f"{block}: {', '.join(given)} are set per arm by the comparison; remove them "
                    "(the base model is `model`, the outputs go under `output`)"
                )
        try:
            self.training_spec("placeholder", "placeholder", self.seeds[0])
        except ValidationError as e:
            raise ValueError(_field_errors("training", e)) from e
        try:
            self.eval_spec("placeholder", "placeholder")
        except ValidationError as e:
            raise ValueError(_field_errors("eval", e)) from e
        return self

    def arm_names(self) -> list[str]:
        return [a if isinstance(a, str) else a.name for a in self.arms]

    def strategies(self) -> dict[str, StrategySpec]:
        """Each arm's whole strategy, by arm name: the shared fields under the arm's own."""
        out = {}
        for a in self.arms:
            name, own = (a, {"type": a}) if isinstance(a, str) else (a.name, a.strategy)
            try:
                out[name] = StrategySpec.model_validate({**self.strategy, **own})
            except ValidationError as e:
                raise ValueError(_field_errors(f"arms[{name}].strategy", e)) from e
        return out

    def mixture_spec(self, strategy: StrategySpec, output_uri: str, seed: int) -> DataMixtureSpec:
        """The DataMixture spec of one arm and seed."""
        return DataMixtureSpec.model_validate(
            {
                "sources": [s.model_dump(by_alias=True, exclude_unset=True) for s in self.sources],
                "tokenizer": self.tokenizer.model_dump(by_alias=True, exclude_unset=True),
                "strategy": strategy.model_dump(by_alias=True, exclude_unset=True),
                "totalTokens": self.totalTokens,
                "sequenceLength": self.sequenceLength,
                "seed": seed,
                "validationFraction": self.validationFraction,
                "output": {"uri": output_uri},
                **self._storage(),
            }
        )

    def _storage(self) -> dict[str, Any]:
        """The storage block, where the file sets one (the resources' default otherwise)."""
        if "storage" not in self.model_fields_set:
            return {}
        return {"storage": self.storage.model_dump(by_alias=True, exclude_unset=True)}

    def training_spec(self, output_uri: str, data_ref: str, seed: int) -> ContextExtensionSpec:
        """The ContextExtension spec of one arm and seed."""
        block = dict(self.training)
        block.setdefault("sequenceLength", self.sequenceLength)
        block["training"] = {**(block.get("training") or {}), "seed": seed}
        return ContextExtensionSpec.model_validate(
            {
                **block,
                "model": self.model.model_dump(by_alias=True, exclude_unset=True),
                "data": {"dataMixtureRef": data_ref},
                "output": {"uri": output_uri},
                **self._storage(),
            }
        )

    def eval_spec(self, extension: str, output_uri: str) -> NeedleEvalSpec:
        """The NeedleEval spec of one arm and seed."""
        return NeedleEvalSpec.model_validate(
            {
                **self.eval,
                "model": {"contextExtensionRef": extension},
                "output": {"uri": output_uri},
                **self._storage(),
            }
        )


STRATEGY_NAMES: tuple[str, ...] = Strategy.__args__  # type: ignore[attr-defined]


class RunOutputs(Model):
    """Where one arm and seed wrote its outputs."""

    arm: str
    """The arm's name."""
    seed: int | None = None
    """The seed; None where the comparison ran one seed."""
    mixture: str
    """The DataMixture output (manifest.json)."""
    model: str
    """The ContextExtension output (final/longreach.json, metrics.jsonl)."""
    needle: str
    """The NeedleEval output (results.json)."""


class ReportConfig(Model):
    """What the report job reads: the runs to compare and where report.md and report.png go."""

    title: str
    """The report's heading, e.g. the comparison's name."""
    runs: list[RunOutputs] = Field(min_length=1)
    """One entry per arm and seed."""
    output: str
    """Folder or URI for report.md and report.png."""
    storage: StorageSpec = StorageSpec()
    """S3 endpoint and region for every URI above."""
