"""Training throughput of the ContextExtension job.

CPU (default): the tiny Llama of the tests at two sequence lengths; the job (DeepSpeed ZeRO-2,
one process, as `python -m longreach.jobs.train`) against a plain PyTorch loop (same model,
same AdamW, activation checkpointing, no DeepSpeed) measured in the same run, both on one
thread (OMP_NUM_THREADS=1) and best of `--rounds` alternating runs.

GPU (`--gpu`, one CUDA device): a ~1.1B Llama-shaped model (random weights from a config) at
each of `--lengths` (ascending, stopping at the first that does not fit), with activation
checkpointing and, with `--checkpointing both`, without: tokens/s, MFU and peak memory from
the job's metrics.jsonl, next to the planner's estimate for the same spec.

    PYTHONSAFEPATH=1 python benchmarks/train_throughput.py [--gpu [--lengths 8192,32768]] [--steps N]
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


def job_run(
    root: Path, model: Path, length: int, steps: int, *, gpu: bool, checkpointing: bool
) -> dict[str, Any]:
    """Run the job for `steps` one-sequence steps; median metrics after the first step."""
    from transformers import AutoConfig

    from longreach.contract.contextextension import ContextExtensionSpec
    from longreach.jobs.train.testdata import write_mixture
    from longreach.operator.contextextension.memory import plan

    vocab = AutoConfig.from_pretrained(str(model)).vocab_size
    tag = f"{length}-{int(checkpointing)}"
    mix = write_mixture(str(root / f"mix-{length}"), sequence_length=length, vocab_size=min(vocab, 512),
                        train_rows=steps, validation_rows=1, rows_per_shard=steps)  # fmt: skip
    spec = {
        "model": {"uri": str(model)}, "data": {"uri": mix}, "sequenceLength": length,
        "rope": {"theta": 1e6},
        "training": {"tokens": length * steps, "batchTokens": length, "validationSequences": 0},
        "deepspeed": {"zeroStage": 3 if gpu else 2, "offloadOptimizer": False,
                      "activationCheckpointing": checkpointing},
        "resources": {"nodes": 1, "gpusPerNode": 1 if gpu else 0, "gpuMemoryGiB": gpu_memory_gib() if gpu else 80},
        "checkpoint": {"everySteps": 10**6}, "output": {"uri": str(root / f"out-{tag}")},
    }  # fmt: skip
    config = root / f"config-{tag}.json"
    config.write_text(json.dumps({"name": f"bench-{tag}", "spec": spec, "dataUri": mix}))
    env = {**os.environ, "PYTHONSAFEPATH": "1"}
    if not gpu:  # one thread each: steadier on a shared machine, and the same as the baseline
        env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([sys.executable, "-P", "-m", "longreach.jobs.train", "--config", str(config)],
                          env=env, capture_output=True, text=True, cwd="/")  # fmt: skip
    estimate = plan(
        ContextExtensionSpec.model_validate(spec), json.loads((model / "config.json").read_text())
    )
    out: dict[str, Any] = {"length": length, "checkpointing": checkpointing,
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
            jobs.append(
                job_run(root, model, length, steps, gpu=False, checkpointing=True).get(
                    "tokensPerSecond", float("nan")
                )
            )
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
        for length in sorted(lengths):
            r = job_run(root, model, length, steps, gpu=True, checkpointing=checkpointing)
            if "error" in r:
                print(
                    f"| {length} | {checkpointing} | {r['error']} | | | {r['planGiB']:.1f} | |",
                    flush=True,
                )
                break
            print(f"| {length} | {checkpointing} | {r['tokensPerSecond']:,.0f} | {r['mfu']:.3f} | "
                  f"{r['peakGiB']:.1f} | {r['planGiB']:.1f} | {r['planGiB'] / r['peakGiB']:.2f} |", flush=True)  # fmt: skip


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.gpu:
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
