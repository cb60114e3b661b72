"""DataMixture cost: CPU-seconds per million output tokens, wall-clock and peak memory of the
whole job (the driver and every Ray process), next to the raw tokenizer's in the same run.

    PYTHONSAFEPATH=1 python benchmarks/mixture_throughput.py

Rows, each on its own generated SlimPajama-layout corpus (jobs/mixture/corpus.py):

- `1M original`, `13M original`: strategy original with a total over the corpus, so the job
  tokenizes every document once, as the raw baseline does: the job's own overhead.
- `1M per-source`: the paper's strategy at 1M tokens on a demo-like corpus (lengths / 16,
  shortDocumentTokens 256) large enough for every budget: the small job a user runs first.
- "fresh": no Ray running; the job decides (raymap.py: small passes in its own process, Ray
  started for bigger ones, its start-up counted). "Ray forced": RunOptions(ray=True) with a
  fresh local Ray (start-up counted), what every job did before. "Ray warm": a Ray started
  and warmed by an earlier run (start-up not counted), as on a running cluster.
- The job runs in this process, with its modules imported beforehand (so every row is
  measured alike): a job process pays that once, printed apart as "job process start-up"
  (a fresh interpreter importing them, measured in a child process).

The baseline: `tokenizers.Tokenizer.encode_batch` (batches of 256) over the same documents
(for per-source, the documents the mixture kept are not known here: the baseline's
per-token cost is taken over the whole corpus) on one core (RAYON_RS_NUM_CPUS=1, as the
job's Ray workers run). CPU is user + system time of this process and all its descendants,
sampled every 50 ms per process (a process that ends between samples loses < 50 ms);
memory is the peak of their summed resident sets. "wall per core" is (job tokens/s ÷ CPUs)
÷ raw tokens/s on one core; the load average printed says how much of the machine the run had.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("RAYON_RS_NUM_CPUS", "1")  # before tokenizers is imported: one core


class ProcessTree:
    """Samples CPU time (per process, so ended ones keep theirs) and the summed RSS of this
    process and its descendants in a thread."""

    def __init__(self) -> None:
        import psutil

        self.root = psutil.Process()
        self.cpu: dict[tuple[int, float], float] = {}
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        rss = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            with contextlib.suppress(Exception):
                t = p.cpu_times()
                self.cpu[(p.pid, p.create_time())] = t.user + t.system
                rss += p.memory_info().rss
        self.peak = max(self.peak, rss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(0.05)

    def __enter__(self) -> ProcessTree:
        self.sample()
        self.start = dict(self.cpu)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    @property
    def cpu_seconds(self) -> float:
        return sum(v - self.start.get(k, 0.0) for k, v in self.cpu.items())

    @property
    def processes(self) -> int:
        return len(self.cpu)


@dataclass
class Row:
    name: str
    tokens: int
    raw_cpu: float
    """Raw tokenizer CPU-seconds per million tokens."""
    raw_rate: float
    """Raw tokenizer tokens per wall second, one core."""
    cpu: float
    """Job CPU-seconds (all processes) per million output tokens."""
    wall: float
    peak: int
    processes: int


def texts_of(corpus: Path) -> list[str]:
    import zstandard

    texts = []
    for f in sorted(corpus.rglob("*.jsonl.zst")):
        body = zstandard.ZstdDecompressor().decompress(f.read_bytes(), max_output_size=1 << 31)
        texts += [json.loads(line)["text"] for line in body.splitlines() if line]
    return texts


def raw_speed(corpus: Path, tokenizer_dir: Path) -> tuple[float, float]:
    """(CPU-seconds per million tokens, tokens per wall second) of encode_batch, one core."""
    from tokenizers import Tokenizer

    texts = texts_of(corpus)
    tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    start, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    for i in range(0, len(texts), 256):
        batch = tok.encode_batch(texts[i : i + 256], add_special_tokens=False)
        tokens += sum(len(e.ids) + 1 for e in batch)  # + BOS, as the job counts
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return cpu / tokens * 1e6, tokens / wall


def job_run(
    corpus: Path, tokenizer_dir: Path, out: Path, spec: dict[str, Any], ray: bool | None, cpus: int
) -> tuple[dict[str, Any], float, ProcessTree]:
    """(manifest, wall seconds, the process tree's measures) of one job run."""
    from longreach.contract.datamixture import MixtureJobConfig
    from longreach.jobs.mixture.job import run
    from longreach.jobs.mixture.raymap import RunOptions

    config = MixtureJobConfig.model_validate(
        {
            "name": "bench",
            "spec": {
                "sources": [{"uri": str(corpus / "train")}],
                "tokenizer": {"uri": str(tokenizer_dir)},
                "validationFraction": 0,
                "output": {"uri": str(out)},
                **spec,
            },
        }
    )
    with ProcessTree() as tree:
        start = time.perf_counter()
        manifest = run(config, RunOptions(ray=ray, num_cpus=cpus))
        seconds = time.perf_counter() - start
    return manifest, seconds, tree


JOB_MODULES = (
    "longreach.jobs.mixture.job",
    "matplotlib.figure",
    "matplotlib.backends.backend_agg",
    "pyarrow.parquet",
    "zstandard",
    "tokenizers",
)


def startup_cost() -> float:
    """CPU-seconds of a fresh interpreter importing what the job uses (once per job process)."""
    import resource
    import subprocess
    import sys

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    code = f"import {', '.join(JOB_MODULES)}"
    subprocess.run([sys.executable, "-P", "-c", code], check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def shutdown_ray() -> None:
    import ray

    ray.shutdown()


ORIGINAL = {"strategy": {"type": "original"}, "totalTokens": "1T", "sequenceLength": 2048}
PER_SOURCE = {
    "strategy": {"type": "per-source", "shortDocumentTokens": 256},
    "totalTokens": "1M",
    "sequenceLength": 1024,
}


def measure(tmp: Path, args: argparse.Namespace) -> tuple[list[Row], float]:
    """The rows, in an order that leaves Ray warm for the last one; and Ray's start-up."""
    from longreach.jobs.mixture.corpus import documents_for, write_slimpajama_corpus
    from longreach.jobs.mixture.raymap import RunOptions, connect_ray
    from longreach.jobs.synthetic import build_tokenizer

    tok = build_tokenizer(tmp / "tok")
    corpora = {
        "small": (args.documents, 1.0),
        "large": (args.documents * 13, 1.0),
        "demo": (documents_for(1_000_000, 1 / 16), 1 / 16),
    }
    for name, (documents, scale) in corpora.items():
        files = max(1, documents // 1000) if name == "large" else 4
        write_slimpajama_corpus(
            str(tmp / name),
            documents=documents,
            files_per_chunk=files,
            chunks=1,
            seed=3,
            scale=scale,
        )
    raw = {name: raw_speed(tmp / name, tok) for name in corpora}
    plan = [
        ("1M original, fresh", "small", ORIGINAL, None),
        ("1M per-source, fresh", "demo", PER_SOURCE, None),
        ("1M per-source, Ray forced", "demo", PER_SOURCE, True),
        ("13M original, fresh", "large", ORIGINAL, None),
    ]
    rows = []
    for i, (name, corpus, spec, ray) in enumerate(plan):
        rows.append(run_row(name, tmp / corpus, tok, tmp / f"out{i}", spec, ray, raw[corpus], args))
        shutdown_ray()
    start = time.perf_counter()
    connect_ray(RunOptions(num_cpus=args.cpus))
    ray_start = time.perf_counter() - start
    run_row("warm-up", tmp / "small", tok, tmp / "warm", ORIGINAL, True, raw["small"], args)
    rows.append(
        run_row(
            "13M original, Ray warm",
            tmp / "large",
            tok,
            tmp / "outw",
            ORIGINAL,
            True,
            raw["large"],
            args,
        )
    )
    shutdown_ray()
    return rows, ray_start


def run_row(
    name: str,
    corpus: Path,
    tok: Path,
    out: Path,
    spec: dict[str, Any],
    ray: bool | None,
    raw: tuple[float, float],
    args: argparse.Namespace,
) -> Row:
    manifest, wall, tree = job_run(corpus, tok, out, spec, ray, args.cpus)
    tokens = sum(d["after"]["tokens"] for d in manifest["domains"].values())
    return Row(
        name,
        tokens,
        raw[0],
        raw[1],
        tree.cpu_seconds / tokens * 1e6,
        wall,
        tree.peak,
        tree.processes,
    )


def report(rows: list[Row], ray_start: float, startup: float, cpus: int) -> None:
    print(
        f"job process start-up: {startup:.2f} CPU-s (not in the rows); Ray start-up before the "
        f"warm row: {ray_start:.1f} s; {cpus} CPUs; "
        f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        "| run | output tokens | raw CPU-s / M tokens | job CPU-s / M tokens | CPU ratio "
        "(job / raw) | job wall s | wall per core (job / raw) | peak RSS MiB | processes |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        per_core = r.tokens / r.wall / cpus / r.raw_rate
        print(
            f"| {r.name} | {r.tokens:,} | {r.raw_cpu:.2f} | {r.cpu:.2f} | {r.cpu / r.raw_cpu:.2f} "
            f"| {r.wall:.1f} | {per_core:.2f} | {r.peak / 2**20:,.0f} | {r.processes} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--documents", type=int, default=860, help="documents of the ~1M-token corpus (x13 for 13M)"
    )
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()
    import importlib

    startup = startup_cost()
    for module in JOB_MODULES:
        importlib.import_module(module)
    tmp = Path(tempfile.mkdtemp(prefix="mixture-bench-"))
    try:
        rows, ray_start = measure(tmp, args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report(rows, ray_start, startup, args.cpus)


if __name__ == "__main__":
    main()
