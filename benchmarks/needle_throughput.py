"""Needle-eval throughput: context building, prefill tokens/s, cells/minute, prefix reuse, and
the paper's full grid timed end to end.

    PYTHONSAFEPATH=1 python benchmarks/needle_throughput.py                 # tiny Llama, CPU
    PYTHONSAFEPATH=1 python benchmarks/needle_throughput.py --prefix-reuse --threads 1 \\
        --size small --lengths 1024,2048,4096 --depths 10 --new-tokens 8     # reuse vs plain
    PYTHONSAFEPATH=1 python benchmarks/needle_throughput.py --size 1b \\
        --lengths 8192,32768,65536 --backends transformers,vllm            # on a GPU
    PYTHONSAFEPATH=1 python benchmarks/needle_throughput.py --size 1b --paper-grid   # GPU
    PYTHONSAFEPATH=1 python benchmarks/needle_throughput.py --build-only paper \\
        --lengths 32768,131072 --depths 3                                   # no model

Models are built from configs with random weights (nothing is downloaded): throughput does
not depend on the weights. The baseline of each table is measured in the same run: batch 1
for cells/minute, the plain path (every prompt computed whole) for prefix reuse, the
transformers backend for vLLM. --paper-grid runs the paper's 40 lengths (1,000-128,000) x 10
depths through the job's context builder and the transformers backend (prefix reuse, the
depths of a length in one batch, halved on running out of memory) and prints the wall time
against the 10-minute target; it needs a GPU with room for a 128K-token KV cache per row.
"""

from __future__ import annotations

import argparse
import os
import random
import tempfile
import time
from pathlib import Path
from typing import Any

SIZES = {
    # hidden, layers, heads, kv heads, intermediate
    "tiny": (64, 2, 4, 2, 256),
    "small": (256, 4, 8, 4, 1024),  # prefill-bound on CPU at a few thousand tokens
    "1b": (2048, 16, 32, 8, 8192),  # ~1.0B parameters (the vocabulary is the 512-token test BPE)
}


def build(tmp: Path, size: str, max_len: int) -> tuple[Path, Any]:
    from transformers import AutoTokenizer

    from longreach.jobs.synthetic import build_tiny_llama, build_tokenizer

    tok_dir = build_tokenizer(tmp / "tok")
    hidden, layers, heads, kv, inter = SIZES[size]
    assert inter == 4 * hidden, "build_tiny_llama uses the usual 4x MLP"
    model = build_tiny_llama(
        tmp / "model", tok_dir, hidden_size=hidden, layers=layers, heads=heads, kv_heads=kv,
        max_position_embeddings=max_len,
    )  # fmt: skip
    return model, AutoTokenizer.from_pretrained(str(model))


def builder(tok: Any, lengths: list[int], new_tokens: int, harness: str = "clean") -> Any:
    """The job's context builder for `harness` over a synthetic haystack of the paper's prompt."""
    from longreach.contract.needleeval import (
        PAPER_ANSWER,
        PAPER_NEEDLE,
        PAPER_PROMPT,
        PAPER_QUESTION,
    )
    from longreach.jobs.needle.grid import ContextBuilder
    from longreach.jobs.needle.paper import PaperContextBuilder
    from longreach.jobs.synthetic import sentences

    common = dict(
        needle=PAPER_NEEDLE,
        question=PAPER_QUESTION,
        answer=PAPER_ANSWER,
        template=PAPER_PROMPT,
        buffer=200,
        haystack=sentences(random.Random(0), max(lengths)),
        lengths=lengths,
        max_new_tokens=new_tokens,
    )
    if harness == "paper":
        return PaperContextBuilder(tok, **common)
    return ContextBuilder(tok, task="single", needles=4, seed=0, **common)


def build_only(tok: Any, lengths: list[int], depths: list[float], harness: str) -> None:
    """Context building alone, per cell, as the job does it (no model)."""
    t = time.perf_counter()
    b = builder(tok, lengths, 50, harness)
    print(f"{harness} harness: haystack tokenized in {time.perf_counter() - t:.2f} s")
    for n in lengths:
        t = time.perf_counter()
        cells_of(b, n, depths)
        per = (time.perf_counter() - t) / len(depths)
        print(f"length {n}: {1000 * per:.0f} ms per cell ({len(depths)} cells)")


def cells_of(b: Any, length: int, depths: list[float]) -> list[Any]:
    """The cells of one length, as the job builds them (shared prefixes marked)."""
    from longreach.jobs.needle.grid import mark_shared_prefixes

    cells = [b.cell(length, d) for d in depths]
    mark_shared_prefixes(cells)
    return cells


def prefill_rate(backend: Any, cell: Any, repeats: int = 5) -> float:
    """Tokens/s of one forward pass over the cell's prompt, best of `repeats` (shared machines
    only ever slow a run down, so the fastest pass is the closest to the machine's own speed)."""
    import torch

    ids = torch.tensor([cell.input_ids], device=backend.device)
    times = []
    with torch.inference_mode():
        backend.model(input_ids=ids[:, :64])  # warm-up
        for _ in range(repeats):
            sync(ids)
            t = time.perf_counter()
            backend.model(input_ids=ids, logits_to_keep=1)
            sync(ids)
            times.append(time.perf_counter() - t)
    return len(cell.input_ids) / min(times)


def sync(t: Any) -> None:
    import torch

    if t.is_cuda:
        torch.cuda.synchronize()


def timed_pass(backend: Any, cells: list[Any], batch: int, new_tokens: int) -> tuple[float, list]:
    """Seconds for one pass over `cells` in batches, and the responses."""
    t = time.perf_counter()
    out = []
    for i in range(0, len(cells), batch):
        out += backend.generate(cells[i : i + batch], new_tokens)
    return time.perf_counter() - t, out


def cells_per_minute(
    backend: Any, cells: list[Any], batch: int, new_tokens: int, repeats: int = 3
) -> float:
    """Best of `repeats` passes over the cells (other work on a shared machine only slows runs)."""
    best = min(timed_pass(backend, cells, batch, new_tokens)[0] for _ in range(repeats))
    return 60 * len(cells) / best


def batching_table(tf: Any, grid: dict[int, list[Any]], new_tokens: int) -> dict[int, float]:
    """Prefill rate and cells/minute at batch 1 against all depths of a length in one batch."""
    n_depths = len(next(iter(grid.values())))
    print(
        f"\n| length | prefill tok/s | cells/min batch 1 (baseline) | cells/min batch {n_depths} | ratio |"
    )
    print("|---:|---:|---:|---:|---:|")
    batched: dict[int, float] = {}
    for n, cells in grid.items():
        rate = prefill_rate(tf, cells[0])
        one = cells_per_minute(tf, cells, 1, new_tokens)
        many = cells_per_minute(tf, cells, n_depths, new_tokens)
        batched[n] = many
        print(f"| {n} | {rate:,.0f} | {one:.1f} | {many:.1f} | {many / one:.2f}x |")
    return batched


def prefix_table(
    plain: Any, reuse: Any, grid: dict[int, list[Any]], batch: int, new_tokens: int
) -> None:
    """Prefix reuse against the plain path at the same batch, alternating passes (best of 3
    each), and whether the responses are the same."""
    print(f"\nbatch {batch}")
    print(
        "\n| length | cells | plain cells/min (baseline) | prefix reuse cells/min | ratio | same responses |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for n, cells in grid.items():
        a = b = float("inf")
        same = 0
        for _ in range(3):
            ta, ra = timed_pass(plain, cells, batch, new_tokens)
            tb, rb = timed_pass(reuse, cells, batch, new_tokens)
            a, b = min(a, ta), min(b, tb)
            same = sum(x == y for x, y in zip(ra, rb, strict=True))
        fa, fb = 60 * len(cells) / a, 60 * len(cells) / b
        print(
            f"| {n} | {len(cells)} | {fa:.1f} | {fb:.1f} | {fb / fa:.2f}x | {same}/{len(cells)} |"
        )


def paper_grid(
    tf: Any, b: Any, lengths: list[int], depths: list[float], batch: int, new: int
) -> None:
    """The paper's grid, every cell, as the job runs it; the wall time against 10 minutes."""
    started = time.perf_counter()
    building = 0.0
    print("\n| length | cells | build s | generate s | total min so far |")
    print("|---:|---:|---:|---:|---:|")
    for n in lengths:
        t = time.perf_counter()
        cells = cells_of(b, n, depths)
        built = time.perf_counter() - t
        building += built
        t = time.perf_counter()
        for i in range(0, len(cells), batch):
            tf.generate(cells[i : i + batch], new)
        ran = time.perf_counter() - t
        total = (time.perf_counter() - started) / 60
        print(f"| {n} | {len(cells)} | {built:.1f} | {ran:.1f} | {total:.2f} |", flush=True)
    total = (time.perf_counter() - started) / 60
    verdict = "met" if total < 10 else "NOT met"
    print(
        f"\npaper grid: {len(lengths)} lengths x {len(depths)} depths in {total:.2f} min "
        f"(context building {building / 60:.2f} min); target < 10 min: {verdict}; "
        f"batch used at the end: {min(batch, tf.fits)}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--size", choices=sorted(SIZES), default="tiny")
    p.add_argument("--lengths", default="512,1024,2048")
    p.add_argument("--depths", type=int, default=3, help="cells per length (depths 0..100)")
    p.add_argument("--new-tokens", type=int, default=50)
    p.add_argument("--backends", default="transformers")
    p.add_argument("--prefix-reuse", action="store_true", help="time prefix reuse vs plain")
    p.add_argument("--batch", type=int, default=0, help="cells per batch; 0: all depths")
    p.add_argument("--paper-grid", action="store_true", help="time the paper's 40 x 10 grid")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch; 0: its default")
    p.add_argument("--build-only", choices=["clean", "paper"], help="time context building only")
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import torch

    from longreach.contract.needleeval import DepthGrid, LengthGrid

    if args.threads:
        torch.set_num_threads(args.threads)  # one thread: steadier numbers on a shared machine
    if args.paper_grid:
        lengths = LengthGrid(min=1000, max=128000, count=40).resolve()
        depths = DepthGrid(count=10).resolve()
    else:
        lengths = [int(x) for x in args.lengths.split(",")]
        depths = DepthGrid(count=args.depths).resolve()
    device = (
        torch.cuda.get_device_name()
        if torch.cuda.is_available()
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        if args.build_only:
            from transformers import AutoTokenizer

            from longreach.jobs.synthetic import build_tokenizer

            tok = AutoTokenizer.from_pretrained(str(build_tokenizer(Path(tmp) / "tok")))
            build_only(tok, lengths, depths, args.build_only)
            return
        model_dir, tok = build(Path(tmp), args.size, max(lengths) + args.new_tokens + 256)
        print(
            f"device: {device}; load average {os.getloadavg()[0]:.1f}; model: {args.size}; "
            f"{args.new_tokens} new tokens"
        )
        run_model(args, model_dir, tok, lengths, depths)


def run_model(
    args: argparse.Namespace, model_dir: Path, tok: Any, lengths: list[int], depths: list[float]
) -> None:
    """The tables that run the model: the paper grid, prefix reuse, or batching (and vLLM)."""
    from longreach.jobs.needle.backends import TransformersBackend

    b = builder(tok, lengths, args.new_tokens)
    batch = args.batch or len(depths)
    if args.paper_grid:
        tf = TransformersBackend(str(model_dir), tok)
        print(f"attention: {tf.attn}; prefix reuse: {tf.chain is not None}; batch {batch}")
        tf.generate(cells_of(b, lengths[0], depths[:1]), 4)  # warm-up
        paper_grid(tf, b, lengths, depths, batch, args.new_tokens)
        return
    t = time.perf_counter()
    grid = {n: cells_of(b, n, depths) for n in lengths}
    build_ms = 1000 * (time.perf_counter() - t) / (len(lengths) * len(depths))
    print(f"context build (prompt tokenized per cell): {build_ms:.2f} ms/cell")
    tf = TransformersBackend(str(model_dir), tok, prefix_reuse=False)
    tf.generate(grid[lengths[0]][:1], 4)  # warm-up: first calls pay for kernel selection
    if args.prefix_reuse:
        reuse = TransformersBackend(str(model_dir), tok)
        reuse.generate(grid[lengths[0]][:1], 4)
        prefix_table(tf, reuse, grid, batch, args.new_tokens)
        return
    batched = batching_table(tf, grid, args.new_tokens)
    if "vllm" in args.backends.split(","):
        del tf  # give the card back to vLLM, which takes 90% of what is free
        vllm_table(model_dir, tok, grid, batched, max(lengths) + args.new_tokens + 256, args)


def vllm_table(
    model_dir: Path,
    tok: Any,
    grid: dict[int, list[Any]],
    batched: dict[int, float],
    max_len: int,
    args: Any,
) -> None:
    """vLLM against the transformers backend's batched cells/minute."""
    import gc

    import torch

    from longreach.jobs.needle.backends import open_backend

    gc.collect()
    torch.cuda.empty_cache()
    vllm = open_backend("vllm", str(model_dir), tok, max_model_len=max_len, gpus=1)
    print("\n| length | transformers cells/min (baseline) | vLLM cells/min | ratio |")
    print("|---:|---:|---:|---:|")
    for n, cells in grid.items():
        fast = cells_per_minute(vllm, cells, len(cells), args.new_tokens)
        print(f"| {n} | {batched[n]:.1f} | {fast:.1f} | {fast / batched[n]:.2f}x |")


if __name__ == "__main__":
    main()
