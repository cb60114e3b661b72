"""The NeedleEval contract: spec and status (the CRD is generated from them), the eval job's
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
    StatusBase,
    rule,
)
from longreach.contract.kind import JobConfig, KindContract, column
from longreach.contract.report import Report

PAPER_NEEDLE = "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
PAPER_QUESTION = "What is the best thing to do in San Francisco?"
PAPER_ANSWER = "eat a sandwich and sit in Dolores Park on a sunny day."
# The paper's harness (eval/needle/needle_in_haystack.py, generate_prompt), verbatim: the
# context wrapped as a book, then the question, for base models. The "<|im_start|>" is
# literal text there (LLaMA-2 has no such special token), so it is kept as text.
PAPER_PROMPT = (
    "<|im_start|> This is a very long story book: <book> {context} </book>.\n"
    " Based on the content of the book, Question: {question}\nAnswer:"
)


class EvalModel(Model):
    """The model to evaluate: exactly one of contextExtensionRef, uri and name."""

    contextExtensionRef: str | None = None
    """Name of a ContextExtension in the same namespace; the eval waits for it and uses its final/ model."""
    uri: str | None = None
    """A Hugging Face model folder: s3://bucket/prefix, file:///abs/path or a plain local path."""
    name: str | None = None
    """A Hugging Face hub id, where the cluster can reach the hub."""

    @rule(
        "[has(self.contextExtensionRef), has(self.uri), has(self.name)].filter(x, x).size() == 1",
        "set exactly one of model.contextExtensionRef, model.uri and model.name",
    )
    def _one_of(self) -> bool:
        return sum(v is not None for v in (self.contextExtensionRef, self.uri, self.name)) == 1


class HaystackSpec(Model):
    """The long text the needle hides in."""

    uri: str = Field(default="builtin:paul-graham", min_length=1)
    """A folder or glob of .txt files read in sorted order, or builtin:paul-graham (the paper's essays)."""


class LengthGrid(Model):
    """Context lengths in tokens: count values spread over [min, max], or explicit values."""

    min: int | None = Field(default=None, ge=1)
    """Shortest context, e.g. 1000."""
    max: int | None = Field(default=None, ge=1)
    """Longest context, e.g. 128000."""
    count: int | None = Field(default=None, ge=1, le=1000)
    """How many lengths: round(linspace(min, max, count))."""
    values: list[int] | None = Field(default=None, max_length=1000)
    """Explicit lengths instead of min/max/count."""

    @rule(
        "has(self.values) != (has(self.min) && has(self.max) && has(self.count))",
        "set either lengths.values or all of lengths.min, lengths.max and lengths.count",
    )
    def _one_of(self) -> bool:
        spread = None not in (self.min, self.max, self.count)
        return (self.values is not None) != spread

    @rule(
        "!has(self.min) || !has(self.max) || self.min <= self.max",
        "lengths.min must not exceed lengths.max",
        "min",
    )
    def _ordered(self) -> bool:
        return self.min is None or self.max is None or self.min <= self.max

    @rule(
        "!has(self.values) || (size(self.values) > 0 && self.values.all(v, v > 0))",
        "lengths.values must be positive token counts",
        "values",
    )
    def _positive(self) -> bool:
        return self.values is None or (len(self.values) > 0 and all(v > 0 for v in self.values))

    def resolve(self) -> list[int]:
        """The lengths of the grid, as the paper spreads them."""
        if self.values is not None:
            return list(self.values)
        assert self.min is not None and self.max is not None and self.count is not None
        return round_linspace(self.min, self.max, self.count)


class DepthGrid(Model):
    """Needle depths in percent of the context: count values over [0, 100], or explicit values."""

    count: int | None = Field(default=10, ge=1, le=101)
    """How many depths: round(linspace(0, 100, count))."""
    values: list[float] | None = Field(default=None, max_length=101)
    """Explicit depths in percent, 0-100; overrides count."""

    @rule(
        "!has(self.values) || self.values.all(v, v >= 0.0 && v <= 100.0)",
        "depths.values must lie in 0-100",
        "values",
    )
    def _in_range(self) -> bool:
        return self.values is None or all(0 <= v <= 100 for v in self.values)

    def resolve(self) -> list[float]:
        """The depths of the grid in percent."""
        if self.values is not None:
            return list(self.values)
        return [float(d) for d in round_linspace(0, 100, self.count or 10)]


def round_linspace(lo: int, hi: int, n: int) -> list[int]:
    """numpy.round(numpy.linspace(lo, hi, n)) exactly, ties included, without numpy (the
    operator does not import it). numpy computes i * ((hi - lo) / (n - 1)) + lo in float64 and
    sets the last value to hi; the order matters at exact .5 ties (lo + (hi - lo) * i / (n - 1)
    gives 62 where numpy gives 63 for linspace(0, 100, 25)[15]). Both round half to even."""
    if n == 1:
        return [lo]
    step = (hi - lo) / (n - 1)
    return [round(i * step + lo) for i in range(n - 1)] + [hi]


class EvalResources(Model):
    """The eval pod."""

    gpus: int = Field(default=1, ge=0, le=64)
    """GPUs for the eval pod; 0 runs on CPU."""
    cpu: Quantity = "8"
    """CPU request."""
    memory: Quantity = "64Gi"
    """Memory request."""


class NeedleEvalSpec(Placement):
    """A needle-in-a-haystack evaluation."""

    model: EvalModel
    """The model to evaluate."""
    haystack: HaystackSpec = HaystackSpec()
    """The haystack text."""
    task: Literal["single", "multi-key", "multi-value"] = "single"
    """single (the paper's), or RULER's multi-key / multi-value variants."""
    needle: str = Field(default=PAPER_NEEDLE, min_length=1)
    """The sentence hidden in the haystack, on a line of its own as in the paper's harness."""
    question: str = Field(default=PAPER_QUESTION, min_length=1)
    """The question asked after the context."""
    answer: str = Field(default=PAPER_ANSWER, min_length=1)
    """The expected answer; its words are looked for in the response."""
    promptTemplate: str = Field(default=PAPER_PROMPT, min_length=1)
    """Prompt with {context} and {question} placeholders; the paper's base-model prompt by default."""
    harness: Literal["clean", "paper"] = "clean"
    """clean (the prompt tokenized once, the needle found by offsets) or paper (the paper's harness, token for token, to compare with published scores)."""
    lengths: LengthGrid = LengthGrid(min=1000, max=128000, count=40)
    """Context lengths in tokens of the model's own tokenizer."""
    depths: DepthGrid = DepthGrid()
    """Needle depths in percent."""
    maxNewTokens: int = Field(default=50, ge=1, le=4096)
    """Greedy decoding budget per cell."""
    answerBufferTokens: int = Field(default=200, ge=0)
    """Tokens kept free for the prompt's question and the answer (the paper's 200)."""
    backend: Literal["auto", "transformers", "vllm"] = "auto"
    """auto picks vLLM on a GPU where installed, else transformers."""
    batchSize: int = Field(default=1, ge=1, le=256)
    """Cells generated together (transformers backend)."""
    seed: int = 0
    """Seed of the RULER variants' random keys and values."""
    needles: int = Field(default=4, ge=2, le=64)
    """RULER variants: needles per cell (multi-key: the asked key plus distractors; multi-value: values of the asked key)."""
    resources: EvalResources = EvalResources()
    """The eval pod's resources."""
    output: OutputSpec
    """Where results.json and heatmap.png go."""

    @rule(
        "self.promptTemplate.contains('{context}') && self.promptTemplate.contains('{question}')",
        "promptTemplate must contain {context} and {question}",
        "promptTemplate",
    )
    def _template_has_slots(self) -> bool:
        return "{context}" in self.promptTemplate and "{question}" in self.promptTemplate

    @rule(
        "self.harness != 'paper' || self.task == 'single'",
        "harness paper reproduces the paper's single-needle harness; use task single, or harness clean for the RULER variants",
        "harness",
    )
    def _paper_is_single(self) -> bool:
        return self.harness != "paper" or self.task == "single"


class EvalProgress(Model):
    """How far the grid is."""

    cellsDone: int = 0
    """Cells evaluated."""
    cells: int = 0
    """Cells in the grid."""
    percent: Round1 = 0
    """Share done, 0-100."""


class EvalResult(Model):
    """The scores."""

    score: Round1 = 0
    """Clean score: mean share of answer words found, 0-100."""
    paperScore: Round1 = 0
    """The paper's scorer (a perfect answer scores 91.7)."""
    uri: str = ""
    """Where results.json and heatmap.png are."""


class NeedleEvalStatus(StatusBase):
    """The observed state of a NeedleEval."""

    progress: EvalProgress = EvalProgress()
    """Progress of the grid."""
    result: EvalResult | None = None
    """Scores, once it succeeded."""

    def percent(self) -> float:
        return self.progress.percent


class NeedleReport(Report):
    """The needle job's progress.json."""

    progress: EvalProgress = EvalProgress()
    """How far the grid is."""
    result: EvalResult | None = None
    """The scores, once it succeeded."""

    def percent(self) -> float:
        return self.progress.percent


class NeedleJobConfig(JobConfig):
    """What the needle job reads from its config file."""

    kind: ClassVar[str] = "NeedleEval"
    run_only: ClassVar[dict[str, Any]] = {
        "spec": {"resources": True, "backend": True, "batchSize": True}
    }

    spec: NeedleEvalSpec
    """The NeedleEval's spec, defaults filled in."""
    modelUri: str
    """The model folder to load (model.uri, model.name, or the referenced run's final/)."""
    trainingLength: int | None = None
    """Sequence length the model was trained at, when known; dashed on the heatmap."""


CONTRACT = KindContract(
    kind=NeedleJobConfig.kind,
    plural="needleevals",
    short_name="needle",
    spec=NeedleEvalSpec,
    status=NeedleEvalStatus,
    report=NeedleReport,
    job_config=NeedleJobConfig,
    job_module="longreach.jobs.needle",
    marker="results.json",
    columns=(
        column("Progress", "number", ".status.progress.percent", "Percent of cells done"),
        column("Score", "number", ".status.result.score", "Clean needle score, 0-100"),
        column("Paper", "number", ".status.result.paperScore", "The paper's score (max 91.7)"),
    ),
)
