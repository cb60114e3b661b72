"""A SlimPajama-layout corpus generator, for tests and `longreach demo`: no downloads.

Writes `train/chunkN/example_train_K.jsonl.zst`, one JSON object per line,
`{"text": ..., "meta": {"redpajama_set_name": "RedPajamaC4"}}`. The seven domains come in
SlimPajama's token shares; document lengths are log-normal around RECIPE.md's per-domain
medians times `scale`, with spreads chosen so that about a third of all tokens sit in
documents over the (equally scaled) 4K threshold, as in the real corpus.

    python -m longreach.jobs.mixture.corpus --out s3://bucket/slimpajama --documents 20000
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import SLIMPAJAMA_SHARES
from longreach.contract.storage import join, write_bytes

# RECIPE.md: median document length in LLaMA tokens, and a log-normal spread per domain
# (sigma) picked so that ~1/3 of tokens are in documents over 4K, as the paper reports.
MEDIAN_TOKENS: dict[str, int] = {
    "RedPajamaC4": 315,
    "RedPajamaCommonCrawl": 1066,
    "RedPajamaStackExchange": 507,
    "RedPajamaWikipedia": 409,
    "RedPajamaGithub": 520,
    "RedPajamaArXiv": 14565,
    "RedPajamaBook": 121602,
}
SIGMA: dict[str, float] = {
    "RedPajamaC4": 1.0,
    "RedPajamaCommonCrawl": 1.0,
    "RedPajamaStackExchange": 1.0,
    "RedPajamaWikipedia": 1.0,
    "RedPajamaGithub": 1.3,
    "RedPajamaArXiv": 0.8,
    "RedPajamaBook": 0.7,
}
CHARS_PER_TOKEN = 3.68
_POOL: dict[int, str] = {}


def domain_document_weights() -> dict[str, float]:
    """Probability of each domain per document, so that *token* shares match SlimPajama's:
    share / mean length (the mean of a log-normal is median * exp(sigma^2 / 2))."""
    raw = {
        d: SLIMPAJAMA_SHARES[d] / (MEDIAN_TOKENS[d] * math.exp(SIGMA[d] ** 2 / 2))
        for d in SLIMPAJAMA_SHARES
    }
    total = sum(raw.values())
    return {d: w / total for d, w in raw.items()}


def mean_document_tokens(scale: float = 1.0) -> float:
    """Expected estimated tokens per generated document."""
    weights = domain_document_weights()
    return sum(
        w * MEDIAN_TOKENS[d] * scale * math.exp(SIGMA[d] ** 2 / 2) for d, w in weights.items()
    )


def documents_for(total_tokens: int, scale: float = 1.0, keep_probability: float = 0.1) -> int:
    """Documents a corpus needs so that a per-source mixture of `total_tokens` can fill every
    domain's budget: C4, mostly short documents, is the tightest (with keep probability 0.1
    only ~15% of its tokens are eligible), hence ~1.2 / (0.06 + keep) times the total."""
    factor = 1.2 / (0.06 + keep_probability)
    return math.ceil(factor * total_tokens / mean_document_tokens(scale))


def _pool(seed: int) -> str:
    """~300K characters of prose from jobs.synthetic.sentences; documents are slices of it
    (generating every document word by word would dominate a test's run time)."""
    if seed not in _POOL:
        from longreach.jobs.synthetic import sentences

        _POOL[seed] = sentences(random.Random(seed), 50_000)
    return _POOL[seed]


def document_text(rng: random.Random, pool: str, chars: int) -> str:
    """`chars` characters (cut at a word boundary, at least one word) from a random place of
    the pool, wrapping around; starts at a sentence."""
    start = pool.find(". ", rng.randrange(len(pool))) + 2
    if start < 2 or start >= len(pool):
        start = 0
    parts: list[str] = []
    left = max(chars, 1)
    pos = start
    while left > 0:
        piece = pool[pos : pos + left]
        parts.append(piece)
        left -= len(piece)
        pos = 0
        if left > 0:
            parts.append(" ")
            left -= 1
    text = "".join(parts)
    cut = text.rfind(" ", 0, chars + 1)
    return (text[:cut] if cut > 0 else text.split(" ", 1)[0]).strip() or "the"


def document_tokens(rng: random.Random, domain: str, scale: float) -> int:
    """A log-normal length around the domain's median times `scale`, clipped at 3.5 sigma."""
    sigma = SIGMA[domain]
    z = max(-3.5, min(3.5, rng.gauss(0.0, 1.0)))
    return max(1, round(MEDIAN_TOKENS[domain] * scale * math.exp(sigma * z)))


def generate_lines(documents: int, files: int, *, seed: int, scale: float) -> list[list[bytes]]:
    """The JSON lines of each file: `documents` documents spread at random over `files`."""
    rng = random.Random(seed)
    pool = _pool(seed)
    weights = domain_document_weights()
    domains, probs = list(weights), list(weights.values())
    out: list[list[bytes]] = [[] for _ in range(files)]
    for _ in range(documents):
        domain = rng.choices(domains, probs)[0]
        chars = round(document_tokens(rng, domain, scale) * CHARS_PER_TOKEN)
        record = {"text": document_text(rng, pool, chars), "meta": {"redpajama_set_name": domain}}
        out[rng.randrange(files)].append(json.dumps(record).encode())
    return out


def write_slimpajama_corpus(
    uri: str,
    storage: StorageSpec | None = None,
    *,
    documents: int = 20_000,
    chunks: int = 2,
    files_per_chunk: int = 2,
    seed: int = 0,
    scale: float = 1.0,
) -> list[str]:
    """Write a SlimPajama-layout corpus under `uri` (`train/chunkN/example_train_K.jsonl.zst`)
    and return the file URIs. Deterministic in its arguments."""
    import zstandard

    if documents < 1 or chunks < 1 or files_per_chunk < 1 or scale <= 0:
        raise ValueError("documents, chunks and files_per_chunk must be >= 1 and scale > 0")
    files = generate_lines(documents, chunks * files_per_chunk, seed=seed, scale=scale)
    compressor = zstandard.ZstdCompressor(level=3)
    written: list[str] = []
    for i, lines in enumerate(files):
        chunk, k = i // files_per_chunk + 1, i % files_per_chunk
        target = join(uri, "train", f"chunk{chunk}", f"example_train_{k}.jsonl.zst")
        body = b"\n".join(lines) + (b"\n" if lines else b"")
        write_bytes(target, compressor.compress(body), storage)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output URI (s3://..., file://... or a path)")
    parser.add_argument("--documents", type=int, default=20_000)
    parser.add_argument("--chunks", type=int, default=2)
    parser.add_argument("--files-per-chunk", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="document length factor")
    parser.add_argument("--endpoint", default="", help="S3 endpoint URL (MinIO, Ceph, moto)")
    args = parser.parse_args(argv)
    try:
        files = write_slimpajama_corpus(
            args.out,
            StorageSpec(endpoint=args.endpoint),
            documents=args.documents,
            chunks=args.chunks,
            files_per_chunk=args.files_per_chunk,
            seed=args.seed,
            scale=args.scale,
        )
    except Exception as exc:
        print(f"corpus: cannot write {args.out}: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(files)} files under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
