"""One attempt of a ContextExtension run, from a validated config to final/ (or a clear failure)."""

from __future__ import annotations

import math

from longreach.contract import storage
from longreach.contract.contextextension import (
    CheckpointRef,
    TrainJobConfig,
    TrainProgress,
    TrainResult,
)
from longreach.contract.ownership import Lease
from longreach.jobs.train import checkpoint
from longreach.jobs.train.dist import Rendezvous
from longreach.jobs.train.prepare import prepare
from longreach.jobs.train.report import Reporter


def run_job(config: TrainJobConfig, rdzv: Rendezvous, reporter: Reporter, lease: Lease) -> None:
    import torch

    from longreach.jobs.train.trainer import resume, setup, train_loop, validate, write_final

    spec = config.spec
    final = storage.join(spec.output.uri, "final")
    done = storage.read_json_if_exists(storage.join(final, "longreach.json"), spec.storage)
    if done is not None:
        # A restart after success (e.g. the pod died after writing the marker): nothing to redo.
        steps = checkpoint.complete_steps(spec.output.uri, spec.storage)
        if steps:
            last = steps[-1]
            reporter.checkpointed(
                CheckpointRef(step=last, uri=checkpoint.uri(spec.output.uri, last))
            )
        reporter.succeeded(
            TrainResult(uri=final, loss=done["loss"], validationLoss=done["validationLoss"],
                        validationLossByDomain=done.get("validationLossByDomain", {})),
            TrainProgress(step=done["step"], totalSteps=done["step"], tokensSeen=done["tokensSeen"], loss=done["loss"], percent=100),
        )  # fmt: skip
        return
    reporter.running("checking the model, the data and the settings")
    prepared = prepare(config)
    gpu = spec.resources.gpusPerNode > 0 and torch.cuda.is_available()
    if spec.resources.gpusPerNode > 0 and not gpu:
        print(
            "longreach: resources.gpusPerNode > 0 but no CUDA device is visible; training on CPU",
            flush=True,
        )
    reporter.running(
        f"starting DeepSpeed: {prepared.batch.totalSteps} steps of {prepared.batch.tokensPerStep} tokens "
        f"({prepared.batch.dataParallel} data-parallel × {prepared.batch.sequenceParallel} sequence-parallel ranks, "
        f"{prepared.batch.accumulation} accumulation steps)"
    )
    run = setup(prepared, rdzv, reporter, gpu)
    state = resume(run)
    loss = train_loop(run, state)
    if math.isnan(loss) and reporter.metrics:  # resumed from a checkpoint of the last step
        loss = reporter.metrics[-1]["loss"]
    reporter.running("computing validation loss by position and by domain")
    validation = validate(run)
    reporter.running("writing final/")
    write_final(run, state, loss, validation, lease)
