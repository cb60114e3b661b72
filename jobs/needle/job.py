"""The NeedleEval job: build the grid, generate, score, write results.json and heatmap.png.

Restarts: every finished cell is kept in `cells.jsonl` next to the outputs (rewritten whole,
atomically, after each batch) together with a fingerprint of everything that decides a
cell's outcome; a restarted job skips the cells whose fingerprint matches. `results.json`
is written last: it is the marker the operator checks.

results.json: the summary (`score` clean 0-100, `paperScore` as the paper's scorer computes
it and `paperScoreMax` the most it can give, `byLength` and `byDepth` means of both,
`extrapolation` with the lengths past the model's max_position_embeddings, `haystack` with
how many passes over it were needed, model, task, `harness` (clean or paper: how the prompts
were built), backend, training length), `cells` (per
cell: `length` asked, `contextTokens` fed including the prompt, `haystackTokens` of
haystack and needle, `depth` asked, `needleDepth` where the needle really sits after the
move back to a sentence end, `needleTokenOffset` of the needle in the fed tokens,
`response`, `score`, `paperScore`, `extrapolated`; RULER tasks add `question`, `expected`
and every needle's offset) and the `spec` it ran.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.errors import InputError
from longreach.contract.needleeval import (
    CONTRACT,
    EvalProgress,
    EvalResult,
    NeedleEvalSpec,
    NeedleJobConfig,
    NeedleReport,
)
from longreach.contract.ownership import Lease
from longreach.contract.report import ReportWriter
from longreach.jobs.entry import claim
from longreach.jobs.fetch import fetch_model
from longreach.jobs.needle.backends import Backend, open_backend
from longreach.jobs.needle.grid import Cell, ContextBuilder, cell_key, mark_shared_prefixes
from longreach.jobs.needle.haystack import load_haystack
from longreach.jobs.needle.heatmap import heatmap_png
from longreach.jobs.needle.paper import PaperContextBuilder
from longreach.jobs.needle.scoring import paper_score, score_cell, summarize


def load_tokenizer_and_limit(model_dir: str) -> tuple[Any, int | None]:
    """The model's own tokenizer and its max_position_embeddings (None when it has none)."""
    from transformers import AutoConfig, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        config = AutoConfig.from_pretrained(model_dir)
    except (OSError, ValueError) as e:
        raise InputError(
            f"modelUri: cannot load the tokenizer and config from {model_dir} ({e}); the folder "
            "must hold config.json and the tokenizer files (save_pretrained of both)"
        ) from e
    text_config = getattr(config, "text_config", None) or config
    return tokenizer, getattr(text_config, "max_position_embeddings", None)


def fingerprint(config: NeedleJobConfig) -> str:
    """What decides a cell's outcome; cells computed under another fingerprint are redone."""
    s = config.spec
    keys = {
        "model": config.modelUri,
        "haystack": s.haystack.uri,
        **s.model_dump(
            include={
                "task",
                "harness",
                "needle",
                "question",
                "answer",
                "promptTemplate",
                "maxNewTokens",
                "answerBufferTokens",
                "seed",
                "needles",
            }
        ),
    }
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def read_cells(uri: str, storage_spec: StorageSpec, print_: str) -> dict[str, dict[str, Any]]:
    """Finished cells from an earlier attempt with the same fingerprint, by cell key."""
    fs, path = storage.filesystem(uri, storage_spec)
    if not fs.exists(path):
        return {}
    rows = [json.loads(line) for line in fs.cat_file(path).decode().splitlines() if line.strip()]
    return {cell_key(r["length"], r["depth"]): r for r in rows if r.get("fingerprint") == print_}


def cell_row(cell: Cell, response: str, task: str, print_: str) -> dict[str, Any]:
    """One cell of results.json."""
    score, paper = score_cell(task, cell.needles.answers, response)
    row: dict[str, Any] = {
        "length": cell.length,
        "depth": cell.depth,
        "contextTokens": len(cell.input_ids),
        "haystackTokens": cell.haystack_tokens,
        "needleTokenOffset": cell.needle_offsets[0],
        "needleTokens": cell.needle_tokens[0],
        "needleDepth": round(cell.needle_depth, 2),
        "response": response,
        "score": round(score, 4),
        "paperScore": round(paper, 4),
        "extrapolated": cell.extrapolated,
        "fingerprint": print_,
    }
    if task != "single":
        row.update(
            question=cell.needles.question,
            expected=cell.needles.answers,
            needleTokenOffsets=cell.needle_offsets,
        )
    return row


def _unique(xs: list[Any]) -> list[Any]:
    return list(dict.fromkeys(xs))


def run(config: NeedleJobConfig, backend: Backend | None = None) -> dict[str, Any]:
    """Evaluate the grid; returns {"generated": n, "skipped": m, "summary": {...}}.

    `backend` replaces the spec's backend (tests pass their own); None opens spec.backend.
    """
    spec = config.spec
    writer = ReportWriter(spec.output.uri, spec.storage, NeedleReport(), interval=2.0)
    with claim(config, writer, marker=CONTRACT.marker) as lease:
        writer.running("reading the haystack and the model's tokenizer")
        return _evaluate(config, backend, writer, lease)


def model_folder(config: NeedleJobConfig) -> str:
    """A local folder (or the hub id of spec.model.name) for the model under evaluation."""
    if config.spec.model.name is not None and config.modelUri == config.spec.model.name:
        return config.modelUri  # a hub id: transformers resolves it where the hub is reachable
    cache = Path(tempfile.gettempdir()) / f"longreach-needle-{config.namespace}-{config.name}"
    return fetch_model(config.modelUri, config.spec.storage, cache, field="modelUri")


def _evaluate(
    config: NeedleJobConfig,
    backend: Backend | None,
    writer: ReportWriter[NeedleReport],
    lease: Lease,
) -> dict[str, Any]:
    spec = config.spec
    out, st = spec.output.uri, spec.storage
    haystack = load_haystack(spec.haystack.uri, st)
    model_dir = model_folder(config)
    tokenizer, limit = load_tokenizer_and_limit(model_dir)
    lengths, depths = (
        sorted(_unique(spec.lengths.resolve())),
        sorted(_unique(spec.depths.resolve())),
    )
    builder = _builder(spec, tokenizer, haystack.text, lengths, limit)
    builder.plan(lengths, depths)
    warnings = _warnings(spec, builder, lengths, depths, limit, len(haystack.files))
    for warning in warnings:
        print(f"needle: warning: {warning}", flush=True)
    writer.running("planned the grid", warnings=warnings)

    print_ = fingerprint(config)
    cells_uri = storage.join(out, "cells.jsonl")
    done = read_cells(cells_uri, st, print_)
    total = len(lengths) * len(depths)
    todo = [(n, d) for n in lengths for d in depths if cell_key(n, d) not in done]
    skipped = total - len(todo)
    print(f"needle: {total} cells, {skipped} already done, {len(todo)} to run", flush=True)
    writer.running(
        f"evaluating {total} cells ({skipped} done before)",
        progress=EvalProgress(
            cells=total, cellsDone=skipped, percent=round(100 * skipped / total, 1)
        ),
    )
    if todo and backend is None:
        # the longest prompt plus the answer; a little slack for RULER questions of other keys
        max_len = len(builder.cell(lengths[-1], depths[0]).input_ids) + spec.maxNewTokens + 16
        backend = open_backend(
            spec.backend, model_dir, tokenizer, max_model_len=max_len, gpus=spec.resources.gpus
        )
    started = time.time()
    for n in lengths:
        pending = [builder.cell(n, d) for d in depths if cell_key(n, d) not in done]
        mark_shared_prefixes(pending)  # the backend may compute a shared prefix once
        step = backend.batch_limit(spec.batchSize) if backend else 1
        for i in range(0, len(pending), step):
            cells = pending[i : i + step]
            assert backend is not None
            responses = backend.generate(cells, spec.maxNewTokens)
            for cell, response in zip(cells, responses, strict=True):
                done[cell.key] = cell_row(cell, response, spec.task, print_)
            _write_cells(cells_uri, st, done)
            finished = sum(cell_key(m, d) in done for m in lengths for d in depths)
            writer.running(
                f"length {n}: {finished}/{total} cells",
                progress=EvalProgress(
                    cells=total, cellsDone=finished, percent=round(100 * finished / total, 1)
                ),
            )
    rows = [done[cell_key(n, d)] for n in lengths for d in depths]
    summary = _summary(config, rows, haystack, builder, limit, backend, time.time() - started)
    summary["warnings"] = warnings
    _commit(config, rows, summary, writer, lease)
    return {"generated": len(todo), "skipped": skipped, "summary": summary}


def _builder(
    spec: NeedleEvalSpec, tokenizer: Any, text: str, lengths: list[int], limit: int | None
) -> ContextBuilder | PaperContextBuilder:
    common: dict[str, Any] = {
        "needle": spec.needle,
        "question": spec.question,
        "answer": spec.answer,
        "template": spec.promptTemplate,
        "buffer": spec.answerBufferTokens,
        "haystack": text,
        "lengths": lengths,
        "max_new_tokens": spec.maxNewTokens,
        "model_max_length": limit,
    }
    if spec.harness == "paper":
        return PaperContextBuilder(tokenizer, **common)
    return ContextBuilder(tokenizer, task=spec.task, needles=spec.needles, seed=spec.seed, **common)


def _warnings(
    spec: NeedleEvalSpec,
    builder: ContextBuilder | PaperContextBuilder,
    lengths: list[int],
    depths: list[float],
    limit: int | None,
    files: int,
) -> list[str]:
    """What makes some cells measure something else than retrieval from fresh text in the
    model's trained range, said before the grid starts."""
    out = []
    if builder.repeats > 1:
        out.append(
            f"haystack.uri ({files} file(s)) is shorter than the longest length {lengths[-1]}: "
            f"its text is repeated {builder.repeats} times, so long cells see text they have "
            "already seen; give a longer haystack for an evaluation without repetition"
        )
    if limit is not None:
        beyond = [
            n
            for n in lengths
            if len(builder.cell(n, depths[0]).input_ids) + spec.maxNewTokens > limit
        ]
        if beyond:
            out.append(
                f"lengths {beyond} (prompt and answer) exceed the model's "
                f"max_position_embeddings ({limit}): those cells measure extrapolation"
            )
    return out


def _write_cells(uri: str, st: StorageSpec, done: dict[str, dict[str, Any]]) -> None:
    lines = "".join(json.dumps(r, sort_keys=True) + "\n" for r in done.values())
    storage.write_bytes(uri, lines.encode(), st)


def _summary(
    config: NeedleJobConfig,
    rows: list[dict[str, Any]],
    haystack: Any,
    builder: ContextBuilder | PaperContextBuilder,
    limit: int | None,
    backend: Backend | None,
    seconds: float,
) -> dict[str, Any]:
    spec = config.spec
    beyond = sorted({r["length"] for r in rows if r["extrapolated"]})
    return {
        **summarize(rows),
        "paperScoreMax": round(paper_score(spec.answer, spec.answer), 4)
        if spec.task == "single"
        else 100.0,
        "name": config.name,
        "namespace": config.namespace,
        "model": config.modelUri,
        "task": spec.task,
        "harness": spec.harness,
        "backend": backend.name if backend else "none (all cells from an earlier attempt)",
        "trainingLength": config.trainingLength,
        "modelMaxLength": limit,
        "extrapolation": {
            "cells": sum(r["extrapolated"] for r in rows),
            "lengths": beyond,
            "note": (
                f"lengths {beyond} exceed the model's max_position_embeddings ({limit}): "
                "extrapolation"
            )
            if beyond
            else "",
        },
        "haystack": {
            "uri": haystack.uri,
            "files": len(haystack.files),
            "repeats": builder.repeats,
            "repeated": builder.repeats > 1,
        },
        "seconds": round(seconds, 2),
        "definitions": DEFINITIONS,
    }


DEFINITIONS = {
    "length": "the grid's context length, in the model's tokens: haystack and needle together "
    "take `length` minus answerBufferTokens (the answer buffer, as in the paper's harness), "
    "leaving room for the prompt's instructions and the answer",
    "contextTokens": "the tokens actually fed to the model for the cell: haystack, needle, "
    "the prompt template's instructions and special tokens",
    "score": "the clean score, 0-100: the share of the answer's distinct words found in the "
    "response; 100 is reachable",
    "paperScore": "the paper's scorer, 0-100 per cell: the response's distinct lowercase "
    "words shared with the answer, over the answer's word count with repeats; an answer "
    "with a repeated word cannot reach 100: its maximum is paperScoreMax (91.7 for the "
    "paper's needle), so the paper's 88.0 is 96% of the maximum",
}
"""What results.json's fields mean (the file says it too)."""


def _model_title(config: NeedleJobConfig) -> str:
    """The model's folder name; a ContextExtension's final/ is named after its run."""
    parts = [p for p in config.modelUri.rstrip("/").split("/") if p]
    if len(parts) > 1 and parts[-1] == "final":
        return parts[-2]
    return parts[-1] if parts else config.name


def _commit(
    config: NeedleJobConfig,
    rows: list[dict[str, Any]],
    summary: dict[str, Any],
    writer: ReportWriter[NeedleReport],
    lease: Lease,
) -> None:
    """heatmap.png, then results.json (the success marker), then the final progress."""
    spec = config.spec
    out, st = spec.output.uri, spec.storage
    png = heatmap_png(
        rows,
        model=_model_title(config),
        score=summary["score"],
        paper_score=summary["paperScore"],
        training_length=config.trainingLength,
        paper_max=summary["paperScoreMax"] if spec.task == "single" else None,
    )
    storage.write_bytes(storage.join(out, "heatmap.png"), png, st)
    cells = [{k: v for k, v in r.items() if k != "fingerprint"} for r in rows]
    results = {**summary, "cells": cells, "spec": spec.wire()}
    lease.check()  # never commit over an output another writer has taken over
    storage.write_json(storage.join(out, "results.json"), results, st)
    lease.finish()
    note = summary["extrapolation"]["note"]
    writer.succeeded(
        f"score {summary['score']:.1f}, paper-compatible {summary['paperScore']:.1f}"
        + (f"; {note}" if note else ""),
        progress=writer.report.progress.model_copy(update={"percent": 100.0}),
        result=EvalResult(score=summary["score"], paperScore=summary["paperScore"], uri=out),
    )
