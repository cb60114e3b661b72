"""DataMixture throughput: the whole job's tokens/s next to raw `tokenizers` speed, and
peak memory at two corpus sizes.

    PYTHONSAFEPATH=1 python benchmarks/mixture_throughput.py
    PYTHONSAFEPATH=1 python benchmarks/mixture_throughput.py --documents 40000 --scale 0.0625

The baseline is measured in the same run, on the same text: `Tokenizer.encode_batch` over
every document of the corpus on one core (RAYON_RS_NUM_CPUS=1, as the job's workers run).
The job runs with strategy `original` and a budget larger than the corpus, so it tokenizes
every document too (documents have SlimPajama's lengths by default: per-document Python work
weighs more with shorter ones); its time covers both passes (read, decide, calibrate, tokenize, pack,
write Parquet, manifest and plots), not Ray's start-up, which is reported apart. The ratio
is job tokens/s per core over raw tokens/s per core. Memory is the peak resident set of the
driver and all Ray processes (they are its descendants in local mode), sampled every 50 ms,
for a corpus and one 4x larger with files of the same size.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")  # before tokenizers is imported: one core


class PeakRss:
    """Samples the summed RSS of this process and its descendants in a thread."""

    def __init__(self) -> None:
        import psutil

        self.root = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def processes(self) -> list[Any]:
        return [self.root, *self.root.children(recursive=True)]

    def current(self) -> int:
        total = 0
        for p in self.processes():
            with contextlib.suppress(Exception):
                total += p.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU time of this process and its descendants (Ray's in local mode)."""
        total = 0.0
        for p in self.processes():
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.05)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def raw_speed(corpus: Path, tokenizer_dir: Path) -> tuple[int, float, float]:
    """(tokens, wall seconds, CPU seconds) of encode_batch over every document, one core."""
    import zstandard
    from tokenizers import Tokenizer

    texts = []
    for f in sorted(corpus.rglob("*.jsonl.zst")):
        body = zstandard.ZstdDecompressor().decompress(f.read_bytes(), max_output_size=1 << 31)
        texts += [json.loads(line)["text"] for line in body.splitlines() if line]
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    start, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for i in range(0, len(texts), 256):
        batch = tok.encode_batch(texts[i : i + 256], add_special_tokens=False)
        tokens += sum(len(e.ids) for e in batch)
    return tokens, time.perf_counter() - start, time.process_time() - cpu


def job_run(
    corpus: Path, tokenizer_dir: Path, out: Path, seq: int
) -> tuple[dict[str, Any], float, float, int]:
    """(manifest, wall seconds, CPU seconds of driver + Ray, peak RSS) of one job run."""
    from longreach.contract.datamixture import MixtureJobConfig
    from longreach.jobs.mixture.job import run
    from longreach.jobs.mixture.raymap import RunOptions

    config = MixtureJobConfig.model_validate(
        {
            "name": "bench",
            "spec": {
                "sources": [{"uri": str(corpus / "train")}],
                "tokenizer": {"uri": str(tokenizer_dir)},
                "strategy": {"type": "original"},
                "totalTokens": "1T",
                "sequenceLength": seq,
                "validationFraction": 0,
                "output": {"uri": str(out)},
            },
        }
    )
    with PeakRss() as rss:
        start, cpu = time.perf_counter(), rss.cpu_seconds()
        manifest = run(config, RunOptions())
        seconds, cpu = time.perf_counter() - start, rss.cpu_seconds() - cpu
    return manifest, seconds, cpu, rss.peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--documents", type=int, default=3_000, help="documents of the smaller corpus"
    )
    parser.add_argument(
        "--scale", type=float, default=1.0, help="document length factor (1: SlimPajama)"
    )
    parser.add_argument("--files", type=int, default=4, help="files of the smaller corpus")
    parser.add_argument("--sequence-length", type=int, default=2048)
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="mixture-bench-"))
    try:
        rows, ray_start, idle = measure(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, ray_start, idle, args.cpus)


def measure(tmp: Path, args: argparse.Namespace) -> tuple[list[tuple[Any, ...]], float, int]:
    """Ray start-up, then the three runs: their table rows."""
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus
    from longreach.jobs.mixture.raymap import RunOptions, connect_ray
    from longreach.jobs.synthetic import build_tokenizer

    tok_dir = build_tokenizer(tmp / "tok")
    start = time.perf_counter()
    connect_ray(RunOptions(num_cpus=args.cpus))
    ray_start = time.perf_counter() - start
    idle = PeakRss().current()
    rows = []
    # The first run pays for Ray's worker processes and their imports: shown apart ("cold").
    for name, factor in (("1x cold", 1), ("1x", 1), ("4x", 4)):
        corpus = tmp / f"corpus{factor}"
        write_slimpajama_corpus(  # the same corpus again for the warm 1x run
            str(corpus),
            documents=args.documents * factor,
            chunks=factor,
            files_per_chunk=args.files,
            seed=factor,
            scale=args.scale,
        )
        raw_tokens, raw_s, raw_cpu = raw_speed(corpus, tok_dir)
        out = tmp / f"out-{len(rows)}"
        manifest, job_s, job_cpu, peak = job_run(corpus, tok_dir, out, args.sequence_length)
        job_tokens = sum(d["after"]["tokens"] for d in manifest["domains"].values())
        rows.append(
            (
                name,
                args.documents * factor,
                raw_tokens,
                raw_tokens / raw_s,
                job_tokens / job_s,
                raw_tokens / raw_cpu,
                job_tokens / job_cpu,
                peak,
            )
        )
    return rows, ray_start, idle


def report(rows: list[tuple[Any, ...]], ray_start: float, idle: int, cpus: int) -> None:
    print(
        f"Ray start-up: {ray_start:.1f} s (not in the job times); {cpus} CPUs; "
        f"idle driver + Ray RSS {idle / 2**20:.0f} MiB; load average {os.getloadavg()[0]:.1f}"
    )
    print(
        "| corpus | documents | tokens | raw tok/s (1 core) | job tok/s (wall) | job tok/s per core "
        "| ratio per core (wall) | raw tok/CPU-s | job tok/CPU-s | ratio (CPU) | peak RSS MiB |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, docs, tokens, raw_rate, job_rate, raw_cpu, job_cpu, peak in rows:
        per_core = job_rate / cpus
        print(
            f"| {name} | {docs:,} | {tokens:,} | {raw_rate:,.0f} | {job_rate:,.0f} | {per_core:,.0f} | "
            f"{per_core / raw_rate:.2f} | {raw_cpu:,.0f} | {job_cpu:,.0f} | {job_cpu / raw_cpu:.2f} | "
            f"{peak / 2**20:,.0f} |"
        )


if __name__ == "__main__":
    main()
