"""Unit tests of the pure core: packing, selection decisions, the corpus generator, readers,
tokenizer. Budgets and their fill: test_mixture_plan.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from longreach.contract.datamixture import (
    SLIMPAJAMA_SHARES,
    DataMixtureSpec,
    SourceSpec,
    TokenizerSpec,
)
from longreach.contract.errors import InputError
from longreach.jobs.mixture import selection as S
from longreach.jobs.mixture.corpus import MEDIAN_TOKENS, SIGMA, document_tokens, generate_lines
from longreach.jobs.mixture.pack import Packer, chunks_table, cut_pieces, document_ids
from longreach.jobs.mixture.readers import check_first_record, documents, list_files
from longreach.jobs.mixture.tokenizer import tokenizer_info

pytestmark = pytest.mark.unit


def spec(**overrides: object) -> DataMixtureSpec:
    base = {
        "sources": [{"uri": "/nowhere"}],
        "tokenizer": {"uri": "/nowhere"},
        "totalTokens": 1000,
        "sequenceLength": 64,
        "output": {"uri": "/out"},
        "validationFraction": 0,
    }
    return DataMixtureSpec.model_validate({**base, **overrides})


# --- packing ---------------------------------------------------------------------------


def test_packer_cuts_exact_chunks_whose_spans_tile_them() -> None:
    rng = np.random.default_rng(0)
    packer, chunks, docs = Packer(32), [], []
    for i in range(40):
        ids = document_ids(list(rng.integers(4, 100, rng.integers(0, 70))), bos=1, eos=None)
        docs.append(ids)
        chunks += packer.add(f"d{i % 3}", ids)
    total = sum(len(d) for d in docs)
    assert len(chunks) == total // 32 and packer.held == total % 32
    stream = np.concatenate(docs)
    for k, chunk in enumerate(chunks):
        assert len(chunk.input_ids) == 32 and chunk.input_ids.dtype == np.int32
        assert np.array_equal(chunk.input_ids, stream[32 * k : 32 * (k + 1)])
        assert chunk.spans[0]["start"] == 0 and chunk.spans[-1]["end"] == 32
        for a, b in zip(chunk.spans, chunk.spans[1:], strict=False):
            assert a["end"] == b["start"]
        for span in chunk.spans[1:]:  # every span but a continuation at the start is a document
            assert chunk.input_ids[span["start"]] == 1


def test_cut_pieces_are_bounded_and_each_starts_with_bos() -> None:
    pieces = list(cut_pieces(list(range(10, 35)), 8, bos=1, eos=2))
    assert [len(p) for p in pieces] == [8, 8, 8, 8, 3]
    assert all(p[0] == 1 and p[-1] == 2 for p in pieces)
    assert np.concatenate([p[1:-1] for p in pieces]).tolist() == list(range(10, 35))
    with pytest.raises(ValueError, match="cutTokens"):
        list(cut_pieces([5], 2, bos=1, eos=2))


def test_chunks_table_has_the_documented_schema() -> None:
    import pyarrow as pa

    packer = Packer(8)
    chunks = packer.add("a", np.arange(20, dtype=np.int32))
    table = chunks_table(chunks, 8)
    assert table.schema.field("input_ids").type == pa.list_(pa.int32())
    assert (
        str(table.schema.field("spans").type)
        == "list<item: struct<domain: string, start: int32, end: int32>>"
    )
    assert table.column("input_ids").to_pylist()[1] == list(range(8, 16))


# --- selection decisions ---------------------------------------------------------------


def test_decisions_depend_only_on_seed_and_identity() -> None:
    a = S.Scorer.from_spec(spec(seed=1))
    b = S.Scorer.from_spec(spec(seed=2))
    ids = [("train/chunk1/x.jsonl.zst", i) for i in range(2000)]
    first = [a.identity(0, r, i) for r, i in ids]
    assert first == [a.identity(0, r, i) for r, i in reversed(ids)][::-1]
    assert first != [b.identity(0, r, i) for r, i in ids]
    bins = np.array([S.bin_of(h) for h, _ in first])
    coins = np.array([c / 2.0**64 for _, c in first])
    assert bins.min() >= 0 and bins.max() < S.BINS and len(set(bins)) > 1900
    assert abs(coins.mean() - 0.5) < 0.03 and abs((coins < 0.1).mean() - 0.1) < 0.02


def test_short_documents_pass_with_the_keep_probability_only() -> None:
    s = S.Scorer.from_spec(
        spec(strategy={"shortDocumentTokens": 100, "shortDocumentKeepProbability": 0.1})
    )
    tenth = 2**64 // 10
    assert s.eligible(100, 2**64 - 1) and s.eligible(99, tenth - 2**40)
    assert not s.eligible(99, tenth + 2**40)
    assert S.Scorer.from_spec(spec(strategy={"type": "original"})).eligible(1, 2**64 - 1)
    assert s.estimate("x" * 368) == 100 and s.is_long(100) and not s.is_long(99)


def test_length_bins_are_the_papers() -> None:
    assert [S.length_bin(t) for t in (0, 1023, 1024, 4095, 4096, 131071, 131072)] == [
        0,
        0,
        1,
        2,
        3,
        7,
        8,
    ]
    assert len(S.BIN_LABELS) == 9


# --- the corpus generator ------------------------------------------------------------------


def test_generated_corpus_has_slimpajama_shares_and_long_documents() -> None:
    files = generate_lines(30_000, 2, seed=3, scale=1 / 64)
    tokens: dict[str, int] = {}
    long = 0
    for line in (x for f in files for x in f):
        rec = json.loads(line)
        n = len(rec["text"]) / 3.68
        d = rec["meta"]["redpajama_set_name"]
        tokens[d] = tokens.get(d, 0) + n
        long += n if n >= 4096 / 64 else 0
    total = sum(tokens.values())
    for d, share in SLIMPAJAMA_SHARES.items():
        assert abs(tokens[d] / total - share) < 0.35 * share + 0.01, d
    assert 0.2 < long / total < 0.5  # about a third, as in SlimPajama


def test_document_lengths_center_on_the_scaled_medians() -> None:
    rng = random.Random(0)
    for d in MEDIAN_TOKENS:
        lengths = sorted(document_tokens(rng, d, 0.5) for _ in range(2001))
        assert abs(lengths[1000] / (MEDIAN_TOKENS[d] * 0.5) - 1) < 0.15 + 0.05 * SIGMA[d], d


# --- readers and tokenizer -----------------------------------------------------------------


def write_jsonl(path: Path, records: list[object], zst: bool = False) -> Path:
    body = b"".join(
        (r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records
    )
    if zst:
        import zstandard

        body = zstandard.ZstdCompressor().compress(body)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(body)
    return path


def test_readers_find_files_by_prefix_glob_and_path(tmp_path: Path) -> None:
    write_jsonl(
        tmp_path / "c" / "train" / "chunk1" / "a.jsonl.zst",
        [{"text": "x", "meta": {"redpajama_set_name": "Y"}}],
        zst=True,
    )
    write_jsonl(tmp_path / "c" / "train" / "chunk2" / "b.jsonl", [{"text": "x"}])
    (tmp_path / "c" / "train" / "README.md").write_text("not data")
    by_prefix = list_files(0, SourceSpec(uri=str(tmp_path / "c")), None)
    assert [u.relpath for u in by_prefix] == ["train/chunk1/a.jsonl.zst", "train/chunk2/b.jsonl"]
    assert [u.format for u in by_prefix] == ["jsonl.zst", "jsonl"]
    by_glob = list_files(0, SourceSpec(uri=f"{tmp_path}/c/train/chunk*/*.jsonl.zst"), None)
    assert [u.relpath for u in by_glob] == ["chunk1/a.jsonl.zst"]
    one = list_files(0, SourceSpec(uri=f"file://{tmp_path}/c/train/chunk2/b.jsonl"), None)
    assert [u.relpath for u in one] == ["b.jsonl"]


def test_records_by_dotted_path_fixed_domain_and_corrupt_lines(tmp_path: Path) -> None:
    f = write_jsonl(
        tmp_path / "a.jsonl",
        [
            {"body": {"t": "one"}, "m": {"d": "web"}},
            b"{broken",
            {"body": {"t": 5}},
            b"",
            {"body": {"t": "two"}, "m": {"d": "web"}},
        ],
    )
    unit = list_files(0, SourceSpec(uri=str(f)), None)[0]
    got = list(documents(unit, SourceSpec(uri=str(f), textField="body.t", domainField="m.d"), None))
    assert got[0] == (0, "one", "web") and got[3] == (4, "two", "web")
    assert got[1][1] is None and "not JSON" in got[1][2]
    assert got[2][1] is None and "not a string" in got[2][2]
    fixed = list(documents(unit, SourceSpec(uri=str(f), textField="body.t", domain="book"), None))
    assert fixed[0] == (0, "one", "book")


def test_parquet_sources_with_nested_domain(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {"text": ["a b", None], "meta": [{"redpajama_set_name": "W"}, {"redpajama_set_name": "W"}]}
    )
    pq.write_table(table, tmp_path / "x.parquet")
    unit = list_files(0, SourceSpec(uri=str(tmp_path)), None)[0]
    got = list(documents(unit, SourceSpec(uri=str(tmp_path)), None))
    assert got[0] == (0, "a b", "W") and got[1][1] is None


def test_bad_sources_name_the_file_and_field(tmp_path: Path) -> None:
    with pytest.raises(InputError, match=r"sources\[0\].uri .*nothing there"):
        list_files(0, SourceSpec(uri=str(tmp_path / "missing")), None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"no .*files found"):
        list_files(0, SourceSpec(uri=str(tmp_path / "empty")), None)
    f = write_jsonl(
        tmp_path / "t" / "a.jsonl", [{"content": "x", "meta": {"redpajama_set_name": "Y"}}]
    )
    unit = list_files(0, SourceSpec(uri=str(f)), None)[0]
    with pytest.raises(InputError, match=r"a.jsonl line 1: no field 'text' \(textField\)"):
        check_first_record(unit, SourceSpec(uri=str(f)), None)


def test_tokenizer_loads_from_folder_or_file_and_fails_clearly(
    tokenizer_dir: Path, tmp_path: Path
) -> None:
    info = tokenizer_info(TokenizerSpec(uri=str(tokenizer_dir)), None)
    assert (
        info.bos_token == "<s>" and info.document_bos == info.bos_id and info.document_eos is None
    )
    assert info.load().encode("hello", add_special_tokens=False).ids
    by_file = tokenizer_info(
        TokenizerSpec(uri=str(tokenizer_dir / "tokenizer.json"), addEos=True), None
    )
    assert by_file.document_eos == by_file.eos_id is not None
    with pytest.raises(InputError, match=r"no tokenizer\.json there"):
        tokenizer_info(TokenizerSpec(uri=str(tmp_path)), None)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(InputError, match="cannot load the tokenizer"):
        tokenizer_info(TokenizerSpec(uri=str(tmp_path)), None)


def test_corpus_cli_writes_the_slimpajama_layout(tmp_path: Path) -> None:
    import zstandard

    from longreach.jobs.mixture.corpus import documents_for, main

    assert (
        main(
            [
                "--out",
                str(tmp_path),
                "--documents",
                "300",
                "--chunks",
                "2",
                "--files-per-chunk",
                "1",
            ]
        )
        == 0
    )
    files = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.jsonl.zst"))
    assert files == [
        "train/chunk1/example_train_0.jsonl.zst",
        "train/chunk2/example_train_0.jsonl.zst",
    ]
    lines = (
        zstandard.ZstdDecompressor()
        .decompress((tmp_path / files[0]).read_bytes(), max_output_size=1 << 26)
        .splitlines()
    )
    record = json.loads(lines[0])
    assert (
        set(record) == {"text", "meta"}
        and record["meta"]["redpajama_set_name"] in SLIMPAJAMA_SHARES
    )
    assert (
        documents_for(1_000_000, 1 / 16)
        > documents_for(1_000_000, 1 / 16, keep_probability=0.5)
        > 0
    )
