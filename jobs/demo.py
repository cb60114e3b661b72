"""`longreach demo`'s inputs for manifests/examples/quickstart.yaml, all small and real:
`python -m longreach.jobs.demo --artifacts DIR` (the CLI runs it before the recipe).

A SlimPajama-layout corpus (seven domains, lengths scaled down 16x so the demo's 256-token
threshold plays the paper's 4K), a byte-level BPE tokenizer, a randomly initialised 2-layer
Llama trained at 512 positions, and a prose haystack. Nothing is downloaded. Each input is
skipped when it already exists, so the demo continues where it stopped.
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

from longreach.contract import storage

SCALE = 1 / 16
DOCUMENTS = 20_000


def prepare(artifacts: str) -> None:
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus
    from longreach.jobs.synthetic import build_tiny_llama, build_tokenizer, sentences

    base = Path(artifacts) / "demo"
    corpus = base / "slimpajama"
    if not (corpus / "train").exists():
        print(f"demo: writing a SlimPajama-layout corpus to {corpus}")
        write_slimpajama_corpus(str(corpus), documents=DOCUMENTS, seed=0, scale=SCALE)
    model = base / "model"
    if not (model / "config.json").exists():
        print(f"demo: training a tokenizer and building a tiny Llama in {model}")
        tokenizer = build_tokenizer(base / "tokenizer")
        build_tiny_llama(model, tokenizer, max_position_embeddings=512)
    haystack = base / "haystack"
    if not haystack.exists():
        haystack.mkdir(parents=True)
        rng = random.Random(7)
        for i in range(3):
            storage.write_bytes(str(haystack / f"essay-{i:02d}.txt"), sentences(rng, 1500).encode())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m longreach.jobs.demo", description=__doc__)
    parser.add_argument("--artifacts", required=True, help="the demo's artifact directory")
    prepare(parser.parse_args(argv).artifacts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
