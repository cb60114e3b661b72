"""The DataMixture job end to end on a local Ray: S3 through moto's server, every strategy,
determinism across workers and block sizes, outputs readable by pyarrow and datasets."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import SLIMPAJAMA_SHARES, MixtureReport
from longreach.contract.report import read_report
from longreach.contract.storage import filesystem, read_json
from longreach.jobs.mixture.job import run
from longreach.jobs.mixture.raymap import RunOptions

from .conftest import SHORT, mixture_config

pytestmark = pytest.mark.integration


def read_chunks(
    root: str, folder: str, storage: StorageSpec | None = None
) -> tuple[list[Any], list[Any]]:
    """All rows of `folder`'s shards in manifest order: (input_ids, spans)."""
    manifest = read_json(f"{root}/manifest.json", storage)
    ids, spans = [], []
    for shard in manifest["shards"][folder]:
        fs, path = filesystem(f"{root}/{shard['path']}", storage)
        with fs.open(path, "rb") as f:
            table = pq.read_table(f)
        assert table.num_rows == shard["rows"]
        ids += table.column("input_ids").to_pylist()
        spans += table.column("spans").to_pylist()
    return ids, spans


def domain_tokens(spans: list[Any]) -> dict[str, int]:
    out: dict[str, int] = {}
    for chunk in spans:
        for s in chunk:
            out[s["domain"]] = out.get(s["domain"], 0) + s["end"] - s["start"]
    return out


def check_chunks(ids: list[Any], spans: list[Any], seq: int, bos: int) -> None:
    """Exactly seq tokens; spans tile the chunk; every span starts at BOS except a chunk's
    first, which may go on with the previous chunk's last document (same domain, no BOS)."""
    previous_domain = None
    for chunk_ids, chunk_spans in zip(ids, spans, strict=True):
        assert len(chunk_ids) == seq
        assert chunk_spans[0]["start"] == 0 and chunk_spans[-1]["end"] == seq
        for a, b in itertools.pairwise(chunk_spans):
            assert a["end"] == b["start"] and a["end"] > a["start"]
        for span in chunk_spans[1:]:
            assert chunk_ids[span["start"]] == bos
        first = chunk_spans[0]
        if chunk_ids[0] != bos and previous_domain is not None:
            assert bos not in chunk_ids[: first["end"]]
        previous_domain = chunk_spans[-1]["domain"]


def test_per_source_on_s3_keeps_shares_and_upsamples_long_documents(
    ray_local: str, corpus: Path, tokenizer_dir: Path, s3_bucket: str, s3_storage: StorageSpec
) -> None:
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus

    write_slimpajama_corpus(
        f"{s3_bucket}/corpus",
        s3_storage,
        documents=80_000,
        chunks=4,
        files_per_chunk=2,
        seed=0,
        scale=1 / 64,
    )
    fs, _ = filesystem(s3_bucket, s3_storage)
    fs.put(str(tokenizer_dir), f"{s3_bucket[5:]}/tokenizer", recursive=True)
    out = f"{s3_bucket}/mixtures/per-source"
    config = mixture_config(
        f"{s3_bucket}/corpus/train",
        f"{s3_bucket}/tokenizer",
        out,
        storage={"endpoint": s3_storage.endpoint},
    )
    manifest = run(config, RunOptions())

    ids, spans = read_chunks(out, "train", s3_storage)
    bos = manifest["tokenizer"]["bosTokenId"]
    check_chunks(ids, spans, 512, bos)
    tokens = domain_tokens(spans)
    total = sum(tokens.values())
    assert total == manifest["tokens"] == len(ids) * 512
    assert abs(total - 250_000) < 0.02 * 250_000
    for domain, share in SLIMPAJAMA_SHARES.items():
        assert abs(tokens[domain] / total - share) < 0.01, (domain, tokens[domain] / total)
    for measure in ("byEstimate", "byTokenizer"):
        lf = manifest["longDocumentTokenFraction"][measure]
        assert lf["before"] < 0.4 and lf["after"] > lf["before"] + 0.15, measure
    assert manifest["warnings"] == []
    assert set(manifest["histograms"]["before"]) == set(SLIMPAJAMA_SHARES)

    val_ids, val_spans = read_chunks(out, "validation", s3_storage)
    check_chunks(val_ids, val_spans, 512, bos)
    assert all(len({s["domain"] for s in c}) == 1 for c in val_spans)  # one domain per chunk
    assert set(manifest["validationChunksPerDomain"]) == set(SLIMPAJAMA_SHARES)

    report = read_report(out, MixtureReport, s3_storage)
    assert report is not None and report.result is not None
    assert report.state == "succeeded" and report.progress.percent == 100
    assert report.result.uri == out and report.result.tokens == manifest["tokens"]
    assert report.progress.documentsRead == 80_000
    for name in ("domains.png", "lengths.png"):
        with fs.open(f"{out[5:]}/{name}", "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert not fs.exists(f"{out[5:]}/_work")


def local_run(
    corpus: Path, tokenizer_dir: Path, out: Path, options: RunOptions | None = None, **spec: Any
) -> dict[str, Any]:
    config = mixture_config(str(corpus / "train"), str(tokenizer_dir), str(out), **spec)
    return run(config, options or RunOptions())


def shard_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*.parquet"))}


def test_output_is_byte_identical_across_workers_and_block_sizes(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    # One process without Ray (as a small job runs), against two Ray workers, three files per
    # block and another tokenizer batch size.
    one = local_run(corpus, tokenizer_dir, tmp_path / "one", RunOptions(ray=False, batch_size=512))
    many = local_run(
        corpus,
        tokenizer_dir,
        tmp_path / "many",
        RunOptions(workers=2, files_per_task=3, batch_size=7),
    )
    assert one["shards"] == many["shards"]
    assert shard_bytes(tmp_path / "one") == shard_bytes(tmp_path / "many")
    names = shard_bytes(tmp_path / "one")
    assert sum(n.startswith("train/") for n in names) >= 3  # file groups, then the tails
    assert sum(n.startswith("validation/") for n in names) == 1

    import datasets

    ds = datasets.load_dataset(
        "parquet", data_files=str(tmp_path / "one" / "train" / "*.parquet"), split="train"
    )
    assert len(ds) == one["chunks"] and len(ds[0]["input_ids"]) == 512
    assert set(ds[0]["spans"][0]) == {"domain", "start", "end"}


def test_original_keeps_the_corpus_mix_and_lengths(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    m = local_run(
        corpus, tokenizer_dir, tmp_path / "o", totalTokens="600K", strategy={"type": "original"}
    )
    before, after = m["domainShares"]["before"], m["domainShares"]["after"]
    for d in before:
        assert abs(after[d] - before[d]) < 0.02, (d, after[d], before[d])
    lf = m["longDocumentTokenFraction"]["byEstimate"]
    assert abs(lf["after"] - lf["before"]) < 0.05


def test_cut_splits_documents_into_bounded_pieces(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    m = local_run(corpus, tokenizer_dir, tmp_path / "c", strategy={"type": "cut", "cutTokens": 32})
    ids, _ = read_chunks(str(tmp_path / "c"), "train")
    bos = m["tokenizer"]["bosTokenId"]
    stream = np.concatenate([np.asarray(x) for x in ids])
    starts = np.flatnonzero(stream == bos)
    assert np.diff(starts).max() <= 32  # every piece, BOS included, is at most cutTokens long
    assert all(
        m["longDocumentTokenFraction"][k]["after"] == 0 for k in ("byEstimate", "byTokenizer")
    )
    assert (
        abs(
            m["domainShares"]["after"]["RedPajamaBook"]
            - m["domainShares"]["before"]["RedPajamaBook"]
        )
        < 0.03
    )


def test_global_downsamples_short_documents_without_budgets(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    m = local_run(corpus, tokenizer_dir, tmp_path / "g", strategy={"type": "global"})
    before, after = m["domainShares"]["before"], m["domainShares"]["after"]
    assert after["RedPajamaC4"] < before["RedPajamaC4"] - 0.05  # the mix changes: C4 falls
    assert (
        after["RedPajamaBook"] > before["RedPajamaBook"]
        and after["RedPajamaArXiv"] > before["RedPajamaArXiv"]
    )
    lf = m["longDocumentTokenFraction"]["byEstimate"]
    assert lf["after"] > lf["before"] + 0.15
    for d, share in m["domainShares"]["target"].items():  # the mix of the eligible documents
        assert abs(after[d] - share) < 0.005, (d, after[d], share)


def test_upsample_domains_reweights_the_named_domains(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    m = local_run(
        corpus,
        tokenizer_dir,
        tmp_path / "u",
        totalTokens="60K",
        strategy={"type": "upsample-domains", "domainShares": {"RedPajamaArXiv": 0.5}},
    )
    after, before = m["domainShares"]["after"], m["domainShares"]["before"]
    assert abs(after["RedPajamaArXiv"] - 0.5) < 0.02
    rest = 1 - before["RedPajamaArXiv"]
    for d in ("RedPajamaC4", "RedPajamaCommonCrawl"):
        assert abs(after[d] - 0.5 * before[d] / rest) < 0.03, d
    lf = m["longDocumentTokenFraction"]["byEstimate"]
    assert lf["after"] > lf["before"]
    assert m["longDocumentTokens"] == SHORT


def test_manifest_describes_the_output(
    ray_local: str, corpus: Path, tokenizer_dir: Path, tmp_path: Path
) -> None:
    import hashlib

    m = local_run(corpus, tokenizer_dir, tmp_path / "m", totalTokens="40K")
    on_disk = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert on_disk == json.loads(json.dumps(m))
    assert m["sequenceLength"] == 512 and m["seed"] == 15213 and len(m["configHash"]) == 64
    assert m["config"]["kind"] == "DataMixture" and m["config"]["format"] == 2
    assert m["config"]["spec"]["strategy"]["type"] == "per-source"
    assert m["configHash"] == json.loads((tmp_path / "m" / "owner.json").read_text())["configHash"]
    assert m["histograms"]["bins"][0] == "0-1K" and m["histograms"]["bins"][-1] == ">128K"
    for shard in m["shards"]["train"] + m["shards"]["validation"]:
        data = (tmp_path / "m" / shard["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == shard["sha256"] and len(data) == shard["bytes"]
    assert m["droppedTokens"]["train"] < 512
    for d, row in m["domains"].items():
        assert row["before"]["documents"] >= row["after"]["documents"] > 0, d
