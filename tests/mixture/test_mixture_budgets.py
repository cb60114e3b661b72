"""The promised shares, end to end: a generated SlimPajama-layout corpus in which some domains
cannot fill their budgets at the default keep probability (the test works out what each
domain holds itself, by reading and tokenizing the corpus), per-source at two totals, both
shortfall behaviours, and the long-document share measured one way before and after."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from longreach.contract.datamixture import SLIMPAJAMA_SHARES, MixtureReport
from longreach.contract.errors import InputError
from longreach.contract.report import read_report
from longreach.jobs.mixture.job import run
from longreach.jobs.mixture.raymap import RunOptions

from .conftest import SCALE, SHORT, mixture_config
from .test_mixture_job import domain_tokens, read_chunks

pytestmark = pytest.mark.integration
KEEP = 0.1  # the default shortDocumentKeepProbability


@dataclass
class Domain:
    """What the corpus holds of one domain, in tokens of the tokenizer (BOS included)."""

    tokens: int = 0
    eligible: int = 0
    """Of documents kept at KEEP: long ones, and short ones whose coin is under it."""
    biggest: int = 0
    estimated: int = 0
    long_estimated: int = 0
    long_tokens: int = 0


@dataclass
class Corpus:
    root: Path
    domains: dict[str, Domain] = field(default_factory=dict)

    def largest_total(self) -> float:
        """The largest total at which every domain can fill its SlimPajama share."""
        return min(d.tokens / SLIMPAJAMA_SHARES[name] for name, d in self.domains.items())


@pytest.fixture(scope="module")
def lean(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Corpus:
    """40K documents in 4 files, and what each domain holds, worked out here: the paper's
    length estimate and coin (the job's Scorer: seed and identity) and the real tokenizer."""
    import zstandard
    from tokenizers import Tokenizer

    from longreach.jobs.mixture.corpus import write_slimpajama_corpus
    from longreach.jobs.mixture.selection import Scorer

    root = tmp_path_factory.mktemp("lean")
    files = write_slimpajama_corpus(
        str(root), documents=40_000, chunks=2, files_per_chunk=2, seed=7, scale=SCALE
    )
    config = mixture_config(
        str(root), str(tokenizer_dir), "/x", strategy={"shortDocumentKeepProbability": KEEP}
    )
    scorer = Scorer.from_spec(config.spec)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    corpus = Corpus(root)
    for path in files:
        relpath = str(Path(path).relative_to(root / "train"))
        lines = (
            zstandard.ZstdDecompressor()
            .decompress(Path(path).read_bytes(), max_output_size=1 << 30)
            .splitlines()
        )
        records = [json.loads(line) for line in lines]
        encoded = tok.encode_batch([r["text"] for r in records], add_special_tokens=False)
        for index, (r, enc) in enumerate(zip(records, encoded, strict=True)):
            d = corpus.domains.setdefault(r["meta"]["redpajama_set_name"], Domain())
            est, real = round(len(r["text"]) / 3.68), len(enc.ids) + 1
            _, coin = scorer.identity(0, relpath, index)
            d.tokens += real
            d.eligible += real if est >= SHORT or coin / 2**64 < KEEP else 0
            d.biggest = max(d.biggest, real)
            d.estimated += est + 1
            d.long_estimated += est + 1 if est >= SHORT else 0
            d.long_tokens += real if est >= SHORT else 0
    return corpus


def mix(
    corpus: Corpus, tokenizer_dir: Path, out: Path, total: int, **strategy: Any
) -> dict[str, Any]:
    """A per-source run in this process (as a small job runs), no validation split."""
    config = mixture_config(
        str(corpus.root / "train"),
        str(tokenizer_dir),
        str(out),
        totalTokens=total,
        validationFraction=0,
        strategy={"shortDocumentKeepProbability": KEEP, **strategy},
    )
    return run(config, RunOptions(ray=False))


def check_shares(m: dict[str, Any], out: Path, corpus: Corpus) -> None:
    """Shares of the written chunks within 0.5 pp of SlimPajama's; every domain within half a
    document of its budget."""
    _, spans = read_chunks(str(out), "train")
    written = domain_tokens(spans)
    total = sum(written.values())
    for d, share in SLIMPAJAMA_SHARES.items():
        assert abs(written[d] / total - share) < 0.005, (d, written[d] / total, share)
        row = m["domains"][d]
        assert abs(row["after"]["tokens"] - row["budgetTokens"]) <= corpus.domains[d].biggest / 2, d


@pytest.mark.parametrize("fraction", [0.3, 0.8])
def test_per_source_keeps_every_share_where_domains_fall_short_at_the_keep_probability(
    lean: Corpus, tokenizer_dir: Path, tmp_path: Path, fraction: float
) -> None:
    total = int(fraction * lean.largest_total())
    budgets = {d: total * s for d, s in SLIMPAJAMA_SHARES.items()}
    short = {d for d, x in lean.domains.items() if x.eligible < 0.95 * budgets[d]}
    roomy = {d for d, x in lean.domains.items() if x.eligible > 1.1 * budgets[d]}
    assert "RedPajamaC4" in short and roomy  # what this test is about

    m = mix(lean, tokenizer_dir, tmp_path / "out", total)
    check_shares(m, tmp_path / "out", lean)
    assert m["warnings"] == [] and m["budgetTotalTokens"] == total
    for d in short:  # more of its short documents, so the share holds
        assert m["domains"][d]["keepProbability"]["effective"] > KEEP, d
    for d in roomy:
        assert m["domains"][d]["keepProbability"] == {"requested": KEEP, "effective": KEEP}, d
    report = read_report(str(tmp_path / "out"), MixtureReport)
    assert report is not None and report.result is not None and report.warnings == []
    assert {d: k.effective for d, k in report.result.keepProbability.items()} == {
        d: round(row["keepProbability"]["effective"], 3) for d, row in m["domains"].items()
    }  # the status rounds; the manifest keeps the exact value
    assert report.result.targetShares == pytest.approx(SLIMPAJAMA_SHARES, abs=5e-5)  # rounded


def test_a_short_corpus_keeps_every_share_with_a_smaller_total_and_says_so(
    lean: Corpus, tokenizer_dir: Path, tmp_path: Path
) -> None:
    largest = lean.largest_total()
    limit = min(lean.domains, key=lambda d: lean.domains[d].tokens / SLIMPAJAMA_SHARES[d])
    m = mix(lean, tokenizer_dir, tmp_path / "out", int(2 * largest))
    check_shares(m, tmp_path / "out", lean)
    assert m["domains"][limit]["after"]["tokens"] == lean.domains[limit].tokens  # all of it
    assert m["budgetTotalTokens"] == pytest.approx(largest, abs=1)
    (warning,) = m["warnings"]
    assert warning.startswith(f"domain {limit} has {lean.domains[limit].tokens:,} tokens")
    assert f"the mixture has {m['tokens']:,} tokens" in warning
    report = read_report(str(tmp_path / "out"), MixtureReport)
    assert report is not None and report.warnings == [warning]  # the operator's Warning condition


def test_shortfall_fail_stops_before_any_shard_naming_the_largest_total(
    lean: Corpus, tokenizer_dir: Path, tmp_path: Path
) -> None:
    largest = lean.largest_total()
    limit = min(lean.domains, key=lambda d: lean.domains[d].tokens / SLIMPAJAMA_SHARES[d])
    with pytest.raises(InputError) as failed:
        mix(lean, tokenizer_dir, tmp_path / "out", int(2 * largest), shortfall="fail")
    message = str(failed.value)
    assert message.startswith(f"strategy.shortfall is fail: domain {limit} has about")
    fits = int(message.split("keeps every share is ")[1].split(";")[0].replace(",", ""))
    assert abs(fits / largest - 1) < 0.03  # decided on the calibrated estimate
    assert not (tmp_path / "out" / "train").exists()
    progress = json.loads((tmp_path / "out" / "progress.json").read_text())
    assert progress["state"] == "failed" and "strategy.shortfall" in progress["error"]


def test_the_long_document_share_is_measured_one_way_and_doubles(
    lean: Corpus, tokenizer_dir: Path, tmp_path: Path
) -> None:
    m = mix(lean, tokenizer_dir, tmp_path / "out", int(0.3 * lean.largest_total()))
    share = m["longDocumentTokenFraction"]
    domains = lean.domains.values()
    by_estimate = sum(d.long_estimated for d in domains) / sum(d.estimated for d in domains)
    by_tokenizer = sum(d.long_tokens for d in domains) / sum(d.tokens for d in domains)
    assert share["byEstimate"]["before"] == pytest.approx(by_estimate)
    assert share["byTokenizer"]["before"] == pytest.approx(by_tokenizer, abs=0.02)  # estimated
    rows = m["domains"].values()
    for measure, key in (("byEstimate", "EstimatedTokens"), ("byTokenizer", "Tokens")):
        after = sum(r["after"][f"long{key}"] for r in rows) / sum(
            r["after"][key[0].lower() + key[1:]] for r in rows
        )
        assert share[measure]["after"] == pytest.approx(after)
        assert share[measure]["after"] > 2 * share[measure]["before"], measure  # the paper's shift
    report = read_report(str(tmp_path / "out"), MixtureReport)
    assert report is not None and report.result is not None
    assert report.result.longDocumentShare.model_dump() == {  # the status rounds
        k: {side: round(share[k][side], 3) for side in ("before", "after")}
        for k in ("byEstimate", "byTokenizer")
    }
    assert report.result.longDocumentTokenFraction == round(share["byEstimate"]["after"], 3)
