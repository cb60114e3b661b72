"""Causal attention forward + backward per backend, for `jobs/train/attention.py`'s MEASURED table.

Times one decoder layer's attention at the shape of the 1.1B benchmark model (32 query heads of
64, 4 KV heads repeated as transformers does without GQA support, bf16, batch 1) at each length,
for every backend `spec.training.attention` names that can run here: SDPA unrestricted, held to
its flash and cuDNN kernels, and FlashAttention-2 where flash-attn is installed. Prints a table
and the MEASURED entry (backends fastest first per length) to copy into the code.

    PYTHONSAFEPATH=1 python benchmarks/attention_backends.py [--lengths 32768,65536,131072]
    PYTHONSAFEPATH=1 python benchmarks/attention_backends.py --cpu --lengths 256   # the code path
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

HEADS, KV_HEADS, HEAD_DIM = 32, 4, 64


def run_once(backend: str, q: Any, k: Any, v: Any) -> None:
    import torch.nn.functional as F

    from longreach.jobs.train.attention import sdpa_scope

    if backend == "flash_attention_2":
        from flash_attn import flash_attn_func

        # flash-attn takes (batch, length, heads, dim) and handles GQA itself.
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), causal=True)
    else:
        rep = q.shape[1] // k.shape[1]
        with sdpa_scope(backend):
            out = F.scaled_dot_product_attention(
                q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True
            )
    out.sum().backward()


def time_backend(backend: str, length: int, reps: int, device: str) -> float | str:
    """Median seconds of forward + backward, or why it could not run."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    gen = torch.Generator(device=device).manual_seed(0)

    def tensor(heads: int) -> Any:
        shape = (1, heads, length, HEAD_DIM)
        return torch.randn(shape, generator=gen, device=device, dtype=dtype).requires_grad_()

    q, k, v = tensor(HEADS), tensor(KV_HEADS), tensor(KV_HEADS)
    times = []
    try:
        for _ in range(reps + 1):  # the first one warms up
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run_once(backend, q, k, v)
            if device == "cuda":
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
    except (RuntimeError, ImportError) as e:
        return str(e).splitlines()[0][:80]
    return statistics.median(times[1:])


def backends(device: str) -> list[str]:
    from longreach.jobs.train.attention import flash_attn_installed

    if device == "cpu":
        return ["sdpa", "sdpa-flash"]
    found = ["sdpa", "sdpa-flash", "sdpa-cudnn"]
    return [*found, "flash_attention_2"] if flash_attn_installed() else found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lengths", default="8192,32768,65536,131072")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--cpu", action="store_true", help="run on CPU (checks the code path)")
    args = parser.parse_args()
    import torch

    device = "cpu" if args.cpu else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: use --cpu")
    card = torch.cuda.get_device_name(0) if device == "cuda" else "cpu"
    names = backends(device)
    print(f"card: {card}; torch {torch.__version__}; heads {HEADS}/{KV_HEADS} x {HEAD_DIM}")
    print("| length | " + " | ".join(f"{b} ms" for b in names) + " | fastest |")
    print("|---:|" + "---:|" * len(names) + "---|")
    rows = []
    for length in sorted(int(x) for x in args.lengths.split(",")):
        got = {b: time_backend(b, length, args.reps, device) for b in names}
        ok = sorted((t, b) for b, t in got.items() if isinstance(t, float))
        cells = [f"{t * 1e3:,.1f}" if isinstance(t, float) else f"({t})" for t in got.values()]
        print(f"| {length} | " + " | ".join(cells) + f" | {ok[0][1] if ok else '-'} |", flush=True)
        rows.append((length, [b for _, b in ok]))
    fragment = card.replace("NVIDIA ", "").split()[0] if device == "cuda" else "cpu"
    print(f"MEASURED entry: {fragment!r}: {rows!r}")


if __name__ == "__main__":
    main()
