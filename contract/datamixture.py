"""The DataMixture contract: spec and status (the CRD is generated from them), the job's
config and its progress.json report."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import Field

from longreach.contract.common import (
    Model,
    OutputSpec,
    Placement,
    Quantity,
    Round1,
    Round3,
    Round4,
    StatusBase,
    Tokens,
    rule,
)
from longreach.contract.kind import JobConfig, KindContract, column
from longreach.contract.report import Report

# SlimPajama's token shares by domain, as in the reference code (RECIPE.md section 1).
SLIMPAJAMA_SHARES: dict[str, float] = {
    "RedPajamaC4": 0.26609933,
    "RedPajamaCommonCrawl": 0.53374772,
    "RedPajamaStackExchange": 0.03169647,
    "RedPajamaWikipedia": 0.03402128,
    "RedPajamaGithub": 0.05004782,
    "RedPajamaArXiv": 0.04290379,
    "RedPajamaBook": 0.0414836,
}

Strategy = Literal["per-source", "original", "cut", "global", "upsample-domains"]
Format = Literal["auto", "jsonl", "jsonl.zst", "parquet"]
Shortfall = Literal["smaller-total", "fail"]
MissingDomains = Literal["fail", "renormalize"]


class SourceSpec(Model):
    """One corpus to read."""

    uri: str = Field(min_length=1)
    """A file, a prefix or a glob: s3://bucket/prefix, file:///abs/path or a plain local path."""
    format: Format = "auto"
    """auto (by suffix), jsonl, jsonl.zst or parquet."""
    textField: str = "text"
    """Dotted path of the document text in each record."""
    domainField: str = "meta.redpajama_set_name"
    """Dotted path of the domain in each record (SlimPajama's by default)."""
    domain: str = ""
    """A fixed domain for every document of this source; overrides domainField."""


class TokenizerSpec(Model):
    """The tokenizer of the model to be trained."""

    uri: str = Field(min_length=1)
    """A tokenizer.json file or a Hugging Face tokenizer folder."""
    addBos: bool = True
    """Start every document with the BOS token, as the paper does."""
    addEos: bool = False
    """End every document with EOS (the paper does not)."""


class StrategySpec(Model):
    """How documents are chosen (RECIPE.md section 1)."""

    type: Strategy = "per-source"
    """per-source (the paper's), original, cut, global or upsample-domains."""
    shortDocumentTokens: int = Field(default=4096, ge=1)
    """Documents estimated shorter than this many tokens count as short."""
    shortDocumentKeepProbability: float = Field(default=0.1, ge=0, le=1)
    """Probability of keeping a short document (per-source, global, upsample-domains); raised where a budget needs more."""
    charsPerToken: float = Field(default=3.68, gt=0)
    """Characters per token, to estimate a document's length before tokenizing."""
    cutTokens: int = Field(default=4096, ge=1)
    """Piece length in tokens for type cut."""
    domainShares: dict[str, float] = {}
    """Token share per domain; default SlimPajama's. For upsample-domains, the shares of the upsampled domains."""
    shortfall: Shortfall = "smaller-total"
    """When a domain's whole corpus cannot fill its budget: smaller-total keeps every share with a smaller total (and a Warning condition), fail stops before any shard is written."""
    missingDomains: MissingDomains = "fail"
    """When domains with a share have no documents: fail before any shard is written, or renormalize the shares over the domains present."""

    @rule(
        "self.type != 'upsample-domains' || size(self.domainShares) > 0",
        "upsample-domains needs domainShares naming the domains to upsample, e.g. {RedPajamaBook: 0.55}",
        "domainShares",
    )
    def _upsample_needs_shares(self) -> bool:
        return self.type != "upsample-domains" or bool(self.domainShares)

    @rule(
        "self.domainShares.all(d, self.domainShares[d] >= 0.0 && self.domainShares[d] <= 1.0)",
        "every share must be between 0 and 1",
        "domainShares",
    )
    def _shares_in_range(self) -> bool:
        return all(0 <= v <= 1 for v in self.domainShares.values())


class RaySpec(Model):
    """The Ray cluster of the RayJob (cluster mode only)."""

    image: str = ""
    """Ray image; empty uses the operator's default data image."""
    workers: int = Field(default=4, ge=0, le=1000)
    """Ray worker pods."""
    workerCPU: Quantity = "8"
    """CPU per worker pod."""
    workerMemory: Quantity = "32Gi"
    """Memory per worker pod."""


class DataMixtureSpec(Placement):
    """A data mixture to build."""

    sources: list[SourceSpec] = Field(min_length=1)
    """Corpora to read (SlimPajama layout or any jsonl / jsonl.zst / parquet)."""
    tokenizer: TokenizerSpec
    """The model's tokenizer."""
    strategy: StrategySpec = StrategySpec()
    """The mixture strategy and its parameters."""
    totalTokens: Tokens
    """Total training tokens to produce, e.g. 5B or 500M: tokens of the given tokenizer, BOS (and EOS) included."""
    sequenceLength: int = Field(ge=16, le=4194304)
    """Tokens per packed chunk, e.g. 131072."""
    seed: int = 15213
    """Seed of every random decision; the output depends on nothing else."""
    validationFraction: float = Field(default=0.001, ge=0, lt=0.5)
    """Share of chunks held out per domain for loss-by-position evaluation."""
    maxCorruptFraction: float = Field(default=0.001, ge=0, le=1)
    """Corrupt input lines are skipped up to this share of all lines, then the job fails."""
    output: OutputSpec
    """Where shards and manifest.json go."""
    ray: RaySpec = RaySpec()
    """Ray cluster size (cluster mode)."""


class MixtureProgress(Model):
    """How far the job is."""

    documentsRead: int = 0
    """Documents read so far."""
    tokensWritten: int = 0
    """Tokens written to shards so far."""
    percent: Round1 = 0
    """Share of the job done, 0-100."""


class KeepProbability(Model):
    """The short-document keep probability of one domain."""

    requested: Round3 = 0
    """strategy.shortDocumentKeepProbability (1 for original and cut, which keep every document)."""
    effective: Round3 = 0
    """The one applied: higher where the domain's budget needed more of its short documents."""


class LongDocumentShare(Model):
    """Share of tokens in long documents, before and after mixing, counted one way."""

    before: Round3 = 0
    """In the corpus."""
    after: Round3 = 0
    """In the documents the mixture kept."""


class LongDocumentShares(Model):
    """Share of tokens in long documents (estimated length at least shortDocumentTokens, the
    paper's rule), counted two ways."""

    byEstimate: LongDocumentShare = LongDocumentShare()
    """Tokens counted as characters / charsPerToken, the paper's estimate."""
    byTokenizer: LongDocumentShare = LongDocumentShare()
    """Tokens of the tokenizer, BOS included; before mixing, estimated tokens times the tokenizer tokens per estimated token of a sample."""


class MixtureResult(Model):
    """What the job produced."""

    uri: str = ""
    """Output location, with manifest.json."""
    tokens: int = 0
    """Training tokens written (tokens of the tokenizer, BOS included)."""
    chunks: int = 0
    """Training chunks written."""
    domainShares: dict[str, Round4] = {}
    """Token share per domain in the output."""
    targetShares: dict[str, Round4] = {}
    """Token share per domain the strategy aimed at."""
    longDocumentTokenFraction: Round3 = 0
    """Share of tokens in long documents after mixing, by the paper's estimate (longDocumentShare.byEstimate.after)."""
    longDocumentShare: LongDocumentShares = LongDocumentShares()
    """Share of tokens in long documents before and after mixing, by estimate and by tokenizer."""
    keepProbability: dict[str, KeepProbability] = {}
    """Per domain: the requested and the effective short-document keep probability."""


class DataMixtureStatus(StatusBase):
    """The observed state of a DataMixture."""

    progress: MixtureProgress = MixtureProgress()
    """Progress of the running job."""
    result: MixtureResult | None = None
    """The output, once it succeeded."""

    def percent(self) -> float:
        return self.progress.percent


class MixtureReport(Report):
    """The mixture job's progress.json."""

    progress: MixtureProgress = MixtureProgress()
    """How far the job is."""
    result: MixtureResult | None = None
    """What it produced, once it succeeded."""

    def percent(self) -> float:
        return self.progress.percent


class MixtureJobConfig(JobConfig):
    """What the mixture job reads from its config file."""

    kind: ClassVar[str] = "DataMixture"
    output_format: ClassVar[int] = 2
    """2: budgets met within one document; an output of format 1 differs."""
    run_only: ClassVar[dict[str, Any]] = {"spec": {"ray": True, "maxCorruptFraction": True}}

    spec: DataMixtureSpec
    """The DataMixture's spec, defaults filled in."""


CONTRACT = KindContract(
    kind=MixtureJobConfig.kind,
    plural="datamixtures",
    short_name="dmix",
    spec=DataMixtureSpec,
    status=DataMixtureStatus,
    report=MixtureReport,
    job_config=MixtureJobConfig,
    job_module="longreach.jobs.mixture",
    marker="manifest.json",
    columns=(
        column("Progress", "number", ".status.progress.percent", "Percent done"),
        column("Tokens", "integer", ".status.result.tokens", "Training tokens written"),
        column(
            "Long-docs-est",
            "number",
            ".status.result.longDocumentTokenFraction",
            "Share of tokens in long documents after mixing, by the paper's estimate",
            priority=1,
        ),
    ),
)
