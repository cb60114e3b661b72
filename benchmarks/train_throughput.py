"""Training throughput of the ContextExtension job.

CPU (default): the tiny Llama of the tests at two sequence lengths; the job (DeepSpeed ZeRO-2,
one process, as `python -m longreach.jobs.train`) against a plain PyTorch loop (same model,
same AdamW, activation checkpointing, no DeepSpeed) measured in the same run, both on one
thread (OMP_NUM_THREADS=1) and best of `--rounds` alternating runs.

GPU (`--gpu`, one CUDA device): a ~1.1B Llama-shaped model (random weights from a config) at
each of `--lengths` (ascending, stopping at the first that does not fit), with activation
checkpointing and, with `--checkpointing both`, without: tokens/s, MFU and peak memory from
the job's metrics.jsonl, next to the planner's estimate for the same spec.

`--compare` (GPU, or `--cpu-tiny` for the code path on the tiny model): at each length the
configuration of 26 November 2026 (`today`: SDPA, no Liger, full activation checkpointing)
against the new defaults' best (`best`: attention auto, kernels auto, checkpointing auto as the
operator resolves it with the planner), side by side with the speed-up; a `best` run that runs
out of memory is retried with full checkpointing. `--offload-length N` adds the paper's setting
(ZeRO-3, optimizer offloaded to CPU, full checkpointing) at N tokens with `--accumulation`
sequences per optimizer step, where one sequence per step would time only the CPU optimizer.

    PYTHONSAFEPATH=1 python benchmarks/train_throughput.py [--gpu [--lengths 8192,32768]] [--steps N]
    PYTHONSAFEPATH=1 python benchmarks/train_throughput.py --gpu --compare --steps 3 \
        --lengths 32768,65536,131072 --offload-length 8192 --accumulation 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# TinyLlama-1.1B's shape.
GPU_MODEL = dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
                 num_key_value_heads=4, vocab_size=32000)  # fmt: skip


def build_model(root: Path, gpu: bool) -> Path:
    from transformers import LlamaConfig, LlamaForCausalLM

    from longreach.jobs.synthetic import build_tiny_llama, build_tokenizer

    tok = build_tokenizer(root / "tokenizer")
    if not gpu:
        return build_tiny_llama(root / "model", tok, max_position_embeddings=128)
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tok))
    config = LlamaConfig(**{**GPU_MODEL, "vocab_size": max(GPU_MODEL["vocab_size"], len(tokenizer))},
                         max_position_embeddings=4096, tie_word_embeddings=False)  # fmt: skip
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(str(root / "model"))
    tokenizer.save_pretrained(str(root / "model"))
    return root / "model"


# What `--compare` runs: the job as measured on 26 November 2026, and the new defaults.
TODAY = {"training": {"attention": "sdpa", "kernels": "none"},
         "deepspeed": {"activationCheckpointing": True}}  # fmt: skip
BEST = {"training": {"attention": "auto", "kernels": "auto"},
        "deepspeed": {"activationCheckpointing": "auto"}}  # fmt: skip
PAPER = {"training": {}, "deepspeed": {"offloadOptimizer": True, "activationCheckpointing": True}}


def job_run(
    root: Path, model: Path, length: int, steps: int, *, gpu: bool, settings: dict[str, Any],
    tag: str, accumulation: int = 1,
) -> dict[str, Any]:  # fmt: skip
    """Run the job for `steps` steps of `accumulation` sequences with `settings` (spec parts
    over ZeRO-3 without offload); median metrics after the first step. activationCheckpointing
    auto is resolved by the planner and written into the job's config, as the operator does."""
    from transformers import AutoConfig

    from longreach.contract.contextextension import ContextExtensionSpec
    from longreach.jobs.train.testdata import write_mixture
    from longreach.operator.contextextension.memory import plan

    vocab = AutoConfig.from_pretrained(str(model)).vocab_size
    rows = steps * accumulation
    mix = write_mixture(str(root / f"mix-{length}-{rows}"), sequence_length=length, vocab_size=min(vocab, 512),
                        train_rows=rows, validation_rows=1, rows_per_shard=rows)  # fmt: skip
    spec = {
        "model": {"uri": str(model)}, "data": {"uri": mix}, "sequenceLength": length,
        "rope": {"theta": 1e6},
        "training": {"tokens": length * rows, "batchTokens": length * accumulation,
                     "validationSequences": 0, **settings["training"]},
        "deepspeed": {"zeroStage": 3 if gpu else 2, "offloadOptimizer": False, **settings["deepspeed"]},
        "resources": {"nodes": 1, "gpusPerNode": 1 if gpu else 0, "gpuMemoryGiB": gpu_memory_gib() if gpu else 80},
        "checkpoint": {"everySteps": 10**6}, "output": {"uri": str(root / f"out-{tag}")},
    }  # fmt: skip
    estimate = plan(
        ContextExtensionSpec.model_validate(spec), json.loads((model / "config.json").read_text())
    )
    job = {"name": f"bench-{tag}", "spec": spec, "dataUri": mix}
    if settings["deepspeed"].get("activationCheckpointing") == "auto":
        job["checkpointing"] = estimate.checkpointing
    config = root / f"config-{tag}.json"
    config.write_text(json.dumps(job))
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    if not gpu:  # one thread each: steadier on a shared machine, and the same as the baseline
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-P", "-m", "longreach.jobs.train", "--config", str(config)],
                          env=env, capture_output=True, text=True, cwd="/")  # fmt: skip
    out: dict[str, Any] = {"length": length, "checkpointing": estimate.checkpointing,
                           "planGiB": estimate.memoryGiB["total"]}  # fmt: skip
    if proc.returncode != 0:
        err = proc.stderr.strip().splitlines() or ["?"]
        print(f"[{tag}] the job failed:", *err[-12:], sep="\n  ", file=sys.stderr)
        last = err[-1]
        return {**out, "error": "out of memory" if "out of memory" in proc.stderr.lower() else last}
    lines = [
        json.loads(x) for x in (root / f"out-{tag}" / "metrics.jsonl").read_text().splitlines()
    ]
    later = lines[1:] or lines
    out.update({k: lines[-1][k] for k in ("attention", "kernels", "checkpointing")})
    out["tokensPerSecond"] = statistics.median(m["tokensPerSecond"] for m in later)
    if gpu:
        out["mfu"] = statistics.median(m.get("mfu", float("nan")) for m in later)
        out["peakGiB"] = max(m["peakMemoryGiB"] for m in lines)
    return out


def torch_baseline(model: Path, length: int, steps: int) -> float:
    """Plain PyTorch: forward, backward and AdamW on the same model; tokens/s (median)."""
    import torch
    from transformers import AutoConfig

    from longreach.jobs.train.model import load_model

    torch.set_num_threads(1)
    # The job's loader: training mode, else transformers skips the checkpointing asked for.
    config = AutoConfig.from_pretrained(str(model))
    m = load_model(str(model), config, gpu=False, attention="sdpa", checkpointing="full")
    opt = torch.optim.AdamW(m.parameters(), lr=1e-4)
    ids = torch.randint(4, 500, (1, length))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        m(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        opt.zero_grad()
        times.append(time.perf_counter() - start)
    return length / statistics.median(times[1:] or times)


def gpu_memory_gib() -> float:
    import torch

    return torch.cuda.get_device_properties(0).total_memory / 2**30


def cpu_table(root: Path, steps: int, rounds: int) -> None:
    model = build_model(root, gpu=False)
    print(
        "| sequence length | job tokens/s (DeepSpeed ZeRO-2) | plain PyTorch tokens/s | job / PyTorch |"
    )
    print("|---:|---:|---:|---:|")
    for length in (512, 2048):
        # Alternate and keep the best of `rounds`: a shared 2-core machine is noisy, and
        # interference only ever slows a run down.
        jobs, bases = [], []
        for _ in range(rounds):
            r = job_run(root, model, length, steps, gpu=False, settings=TODAY, tag=f"{length}")
            jobs.append(r.get("tokensPerSecond", float("nan")))
            bases.append(torch_baseline(model, length, steps))
        tps, base = max(jobs), max(bases)
        print(f"| {length} | {tps:,.0f} | {base:,.0f} | {tps / base:.2f} |", flush=True)


def gpu_table(root: Path, steps: int, lengths: list[int], checkpointing_modes: list[bool]) -> None:
    import torch

    model = build_model(root, gpu=True)
    print(f"card: {torch.cuda.get_device_name(0)}; model {GPU_MODEL}")
    print("| length | checkpointing | tokens/s | MFU | peak GiB | planner GiB | planner / peak |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for checkpointing in checkpointing_modes:
        settings = {**TODAY, "deepspeed": {"activationCheckpointing": checkpointing}}
        for length in sorted(lengths):
            r = job_run(root, model, length, steps, gpu=True, settings=settings,
                         tag=f"{length}-{int(checkpointing)}")  # fmt: skip
            if "error" in r:
                print(
                    f"| {length} | {checkpointing} | {r['error']} | | | {r['planGiB']:.1f} | |",
                    flush=True,
                )
                break
            print(f"| {length} | {checkpointing} | {r['tokensPerSecond']:,.0f} | {r['mfu']:.3f} | "
                  f"{r['peakGiB']:.1f} | {r['planGiB']:.1f} | {r['planGiB'] / r['peakGiB']:.2f} |", flush=True)  # fmt: skip


def row(name: str, r: dict[str, Any], gpu: bool, base: dict[str, Any] | None = None) -> str:
    """One line of the comparison table (MFU and peak only where the job measured them)."""
    what = f"| {r['length']} | {name} | {r.get('attention', '')} | {r.get('kernels', '')} | {r['checkpointing']}"
    if "error" in r:
        return f"{what} | {r['error']} | | | | {r['planGiB']:.1f} | |"
    speedup = ""
    if base and "tokensPerSecond" in base:
        speedup = f"{r['tokensPerSecond'] / base['tokensPerSecond']:.2f}x"
    mfu = f"{r['mfu']:.3f}" if gpu else ""
    peak = f"{r['peakGiB']:.1f}" if gpu else ""
    ratio = f"{r['planGiB'] / r['peakGiB']:.2f}" if gpu else ""
    return (f"{what} | {r['tokensPerSecond']:,.0f} | {speedup} | {mfu} | {peak} | "
            f"{r['planGiB']:.1f} | {ratio} |")  # fmt: skip


def compare_table(
    root: Path, steps: int, lengths: list[int], gpu: bool, offload: int, accumulation: int
) -> None:
    """today vs best per length, then the paper's offload setting at `offload` tokens."""
    import torch

    model = build_model(root, gpu=gpu)
    card = torch.cuda.get_device_name(0) if gpu else "cpu (tiny model: the code path only)"
    print(f"card: {card}; torch {torch.__version__}; model {GPU_MODEL if gpu else 'tiny'}")
    print("| length | config | attention | kernels | checkpointing | tokens/s | vs today | MFU "
          "| peak GiB | planner GiB | planner / peak |")  # fmt: skip
    print("|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for length in sorted(lengths):
        today = job_run(root, model, length, steps, gpu=gpu, settings=TODAY, tag=f"{length}-today")
        print(row("today", today, gpu), flush=True)
        best = job_run(root, model, length, steps, gpu=gpu, settings=BEST, tag=f"{length}-best")
        if "out of memory" in best.get("error", "") and best["checkpointing"] != "full":
            print(row("best", best, gpu), flush=True)
            full = {**BEST, "deepspeed": {"activationCheckpointing": True}}
            best = job_run(
                root, model, length, steps, gpu=gpu, settings=full, tag=f"{length}-best-full"
            )
        print(row("best", best, gpu, today), flush=True)
    if offload:
        paper = job_run(root, model, offload, steps, gpu=gpu, settings=PAPER,
                        tag=f"{offload}-paper", accumulation=accumulation)  # fmt: skip
        print(row(f"paper offload, {accumulation} seq/step", paper, gpu), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpu", action="store_true", help="the ~1.1B model on one CUDA GPU")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="CPU: best of this many runs each")
    parser.add_argument(
        "--lengths", default="8192,32768,65536,131072", help="GPU: sequence lengths"
    )
    parser.add_argument("--checkpointing", choices=["on", "off", "both"], default="both",
                        help="GPU: activation checkpointing")  # fmt: skip
    parser.add_argument("--compare", action="store_true", help="today's settings vs the best")
    parser.add_argument("--cpu-tiny", action="store_true", help="--compare on CPU, tiny model")
    parser.add_argument("--offload-length", type=int, default=0,
                        help="--compare: also the paper's offload setting at this length")  # fmt: skip
    parser.add_argument("--accumulation", type=int, default=32, help="sequences per offload step")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.compare:
            import torch

            if not args.cpu_tiny and not torch.cuda.is_available():
                sys.exit("--compare needs a CUDA device, or --cpu-tiny for the code path")
            lengths = [int(x) for x in args.lengths.split(",")]
            compare_table(Path(tmp), args.steps, lengths, not args.cpu_tiny, args.offload_length,
                          args.accumulation)  # fmt: skip
        elif args.gpu:
            import torch

            if not torch.cuda.is_available():
                sys.exit("--gpu needs a CUDA device")
            modes = {"on": [True], "off": [False], "both": [True, False]}[args.checkpointing]
            lengths = [int(x) for x in args.lengths.split(",")]
            gpu_table(Path(tmp), args.steps, lengths, modes)
        else:
            cpu_table(Path(tmp), args.steps, args.rounds)


if __name__ == "__main__":
    main()
