"""`longreach demo`'s inputs for manifests/examples/quickstart.yaml, all small and real:
`python -m longreach.jobs.demo --artifacts DIR` (the CLI runs it before the recipe).

A SlimPajama-layout corpus (seven domains, lengths scaled down 16x so the demo's 256-token
threshold plays the paper's 4K), a prose haystack, and the base model: a 2-layer Llama with a
byte-level BPE tokenizer, pretrained at 512 positions to retrieve within them (jobs/stage_one.py;
the copy shipped in jobs/demo-model/ was built by `python -m longreach.jobs.stage_one --out
jobs/demo-model`, and is rebuilt that way, in about 30 minutes, when it is missing). Nothing is
downloaded. Each input is skipped when it already exists, so the demo continues where it
stopped.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
from pathlib import Path

from longreach.contract import storage

SCALE = 1 / 16
DOCUMENTS = 20_000
BASE_MODEL = Path(__file__).parent / "demo-model"


def prepare(artifacts: str) -> None:
    from longreach.jobs.mixture.corpus import write_slimpajama_corpus
    from longreach.jobs.synthetic import sentences

    base = Path(artifacts) / "demo"
    corpus = base / "slimpajama"
    if not (corpus / "train").exists():
        print(f"demo: writing a SlimPajama-layout corpus to {corpus}")
        write_slimpajama_corpus(str(corpus), documents=DOCUMENTS, seed=0, scale=SCALE)
    model = base / "model"
    if not (model / "config.json").exists():
        partial = base / "model.partial"  # renamed into place whole: a stop leaves no half model
        shutil.rmtree(partial, ignore_errors=True)
        if (BASE_MODEL / "model.safetensors").exists():
            print(f"demo: copying the stage-one base model to {model}")
            shutil.copytree(BASE_MODEL, partial)
        else:
            from longreach.jobs.stage_one import train

            print(f"demo: {BASE_MODEL} is missing; running stage one for {model} (~30 min)")
            train(partial)
        shutil.rmtree(model, ignore_errors=True)
        partial.rename(model)
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
