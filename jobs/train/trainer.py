"""The training run: set up DeepSpeed, resume from the newest complete checkpoint, train, evaluate,
write final/. The loop itself is `train_loop`; everything else is one job per function."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any

from longreach.contract import storage
from longreach.contract.contextextension import CheckpointRef, TrainProgress, TrainResult
from longreach.contract.ownership import Lease
from longreach.jobs.train import attention as attention_choice
from longreach.jobs.train import checkpoint, kernels
from longreach.jobs.train.compute import (
    flops_per_token,
    make_slice,
    peak_flops,
    predicted_tokens,
    summed_loss,
)
from longreach.jobs.train.data import micro_batches
from longreach.jobs.train.derive import deepspeed_config, lr_at, sequence_parallel_grad_scale
from longreach.jobs.train.dist import Rendezvous, all_sum, barrier, broadcast
from longreach.jobs.train.evaluate import loss_by_position
from longreach.jobs.train.model import decoder_layers, load_model, upload_folder
from longreach.jobs.train.prepare import Prepared
from longreach.jobs.train.report import Reporter


@dataclass
class State:
    """What a checkpoint carries besides DeepSpeed's own state."""

    step: int = 0
    tokensSeen: int = 0
    dataPosition: int = 0


@dataclass
class Run:
    prepared: Prepared
    rdzv: Rendezvous
    reporter: Reporter
    engine: Any
    gpu: bool
    device: Any
    spRank: int
    dpRank: int
    flopsPerToken: float
    gradScale: float
    ran: dict[str, Any]
    """What runs, for the metrics and final/longreach.json: the attention backend, the kernels
    (liger or none) and the activation checkpointing mode."""

    @property
    def fusedLoss(self) -> bool:
        return self.ran["kernels"] == "liger"


def setup(prepared: Prepared, rdzv: Rendezvous, reporter: Reporter, gpu: bool) -> Run:
    """Initialise the process group, load the model (partitioned under ZeRO-3), register Ulysses
    attention and wrap everything in a DeepSpeed engine with our learning-rate schedule."""
    import deepspeed
    import torch

    spec, batch = prepared.config.spec, prepared.batch
    device = torch.device("cuda", rdzv.localRank) if gpu else torch.device("cpu")
    # Settings that cannot run here fail now, naming the field, before DeepSpeed starts. Under
    # Ulysses each rank's attention still spans the whole sequence (for its share of the heads).
    card = torch.cuda.get_device_name(device) if gpu else "cpu"
    attention = attention_choice.choose(
        spec.training.attention, gpu=gpu, card=card, length=batch.sequenceLength
    )
    model_type = str(getattr(prepared.hfConfig.get_text_config(), "model_type", ""))
    fused = kernels.choose(spec.training.kernels, gpu=gpu, model_type=model_type)
    mode = prepared.config.checkpointing_mode()
    chosen = {"attention": attention.backend, "kernels": fused.name, "checkpointing": mode}
    if rdzv.isMain:
        print(
            f"longreach: attention {attention.backend} ({attention.reason}), kernels "
            f"{fused.name} ({fused.reason}), activation checkpointing {mode}",
            flush=True,
        )
    if gpu:  # before the process group, so NCCL binds each rank to its own GPU
        torch.cuda.set_device(device)
    deepspeed.init_distributed(dist_backend="nccl" if gpu else "gloo")
    ds_config = deepspeed_config(spec, batch, gpu=gpu)
    if rdzv.isMain:
        print("longreach: DeepSpeed config " + json.dumps(ds_config, sort_keys=True), flush=True)
    hf_ds = None
    if spec.deepspeed.zeroStage == 3:
        from transformers.integrations import HfDeepSpeedConfig

        # While this object lives, from_pretrained loads the weights already partitioned.
        hf_ds = HfDeepSpeedConfig(ds_config)
    kernels.apply(fused, model_type)
    model = load_model(
        prepared.modelPath, prepared.hfConfig, gpu=gpu, attention=attention.implementation,
        checkpointing=mode,
    )  # fmt: skip
    if fused.liger:
        kernels.fused_loss_model(model)
    if spec.training.compile:
        for layer in decoder_layers(model):
            layer.compile()
    mpu = None
    if batch.sequenceParallel > 1:
        from deepspeed.runtime.sequence_parallel.ulysses_sp import UlyssesSPAttentionHF

        mpu = UlyssesSPAttentionHF.register_with_transformers(
            model_name_or_path=model,
            core_attn_implementation=attention.implementation,
            sequence_parallel_size=batch.sequenceParallel,
            micro_batch_size=batch.microBatch,
            seq_length=batch.sequenceLength,
            seq_length_is_variable=False,
        )
    params = sum(p.ds_numel if hasattr(p, "ds_numel") else p.numel() for p in model.parameters())
    peak = spec.training.learningRate

    def schedule(optimizer: Any) -> Any:
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: lr_at(spec, batch.totalSteps, s) / peak
        )

    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=[p for p in model.parameters() if p.requires_grad],
        config=ds_config,
        lr_scheduler=schedule,
        mpu=mpu,
    )
    del hf_ds
    fpt = flops_per_token(prepared.hfConfig, params, batch.sequenceLength)
    sp = batch.sequenceParallel
    scale = sequence_parallel_grad_scale(spec.deepspeed.zeroStage, sp)
    return Run(
        prepared, rdzv, reporter, engine, gpu, device, rdzv.rank % sp, rdzv.rank // sp, fpt, scale,
        chosen,
    )  # fmt: skip


def resume(run: Run) -> State:
    """Load the newest complete checkpoint, if any. Rank 0 picks it so every rank agrees."""
    cfg = run.prepared.config
    output, store = cfg.spec.output.uri, cfg.spec.storage
    steps = checkpoint.complete_steps(output, store) if run.rdzv.isMain else []
    step = broadcast(steps[-1] if steps else None)
    if step is None:
        return State()
    if run.rdzv.isNodeMain:
        checkpoint.download(output, step, run.prepared.staging, store)
    barrier()
    _, client = run.engine.load_checkpoint(
        str(run.prepared.staging), tag=checkpoint.name(step), load_lr_scheduler_states=True
    )
    barrier()
    if run.rdzv.isNodeMain:
        import shutil

        shutil.rmtree(run.prepared.staging / checkpoint.name(step), ignore_errors=True)
    state = State(**client["longreach"])
    run.reporter.checkpointed(CheckpointRef(step=step, uri=checkpoint.uri(output, step)))
    run.reporter.resume_metrics(state.step)
    run.reporter.running(f"resumed from checkpoint step {step}")
    print(f"longreach: resumed from step {step} (data position {state.dataPosition})", flush=True)
    return state


def save_checkpoint(run: Run, state: State) -> None:
    """DeepSpeed state to the node's staging folder, uploaded by each node, committed by rank 0."""
    cfg = run.prepared.config
    output, store = cfg.spec.output.uri, cfg.spec.storage
    run.engine.save_checkpoint(
        str(run.prepared.staging),
        tag=checkpoint.name(state.step),
        client_state={"longreach": asdict(state)},
        save_latest=False,
    )
    barrier()
    if run.rdzv.isNodeMain:
        checkpoint.upload(run.prepared.staging, output, state.step, store)
    barrier()
    if run.rdzv.isMain:
        checkpoint.commit(output, state.step, asdict(state), store)
        checkpoint.prune(output, cfg.spec.checkpoint.keep, store)
        run.reporter.checkpointed(
            CheckpointRef(step=state.step, uri=checkpoint.uri(output, state.step))
        )
        run.reporter.flush_metrics()
        run.reporter.running(f"checkpoint at step {state.step}")
    barrier()
    if cfg.pauseAfterCheckpointSeconds:
        time.sleep(cfg.pauseAfterCheckpointSeconds)


def train_step(run: Run, state: State) -> float:
    """One optimizer step over this rank's micro-batches; returns the global mean loss.

    Each rank's loss is its slice's summed token loss over the tokens of the whole sequence, so
    the sequence-parallel ranks' losses add up to the full sequence's mean loss; `gradScale`
    makes DeepSpeed's gradient reduction add them up too (see `sequence_parallel_grad_scale`)."""
    batch = run.prepared.batch
    local = 0.0
    for positions in micro_batches(state.dataPosition, batch, run.dpRank):
        samples = [run.prepared.train.sample(p) for p in positions]
        part = make_slice(samples, batch.sequenceParallel, run.spRank, run.device)
        # An SDPA backend held for the forward pass must hold for the backward too, where
        # activation checkpointing runs the attention again.
        with attention_choice.sdpa_scope(run.ran["attention"]):
            loss = summed_loss(run.engine, part, fused=run.fusedLoss) / predicted_tokens(
                len(samples), batch.sequenceLength
            )
            run.engine.backward(loss * run.gradScale)
        run.engine.step()
        local += float(loss.detach())
    (total,) = all_sum([local])
    return total / (batch.dataParallel * batch.accumulation)


def train_loop(run: Run, state: State) -> float:
    """Step until done, checkpointing and reporting; returns the last step's loss."""
    spec, batch = run.prepared.config.spec, run.prepared.batch
    loss, recent = float("nan"), []
    while state.step < batch.totalSteps:
        lr = lr_at(spec, batch.totalSteps, state.step)
        started = time.perf_counter()
        loss = train_step(run, state)
        elapsed = time.perf_counter() - started
        state.step += 1
        state.tokensSeen += batch.tokensPerStep
        state.dataPosition += batch.sequencesPerStep
        recent = [*recent[-9:], elapsed]
        tps = batch.tokensPerStep * len(recent) / sum(recent)
        run.reporter.step(step_metrics(run, state, loss, lr, batch.tokensPerStep / elapsed), TrainProgress(
            step=state.step, totalSteps=batch.totalSteps, tokensSeen=state.tokensSeen, loss=loss,
            tokensPerSecond=tps, percent=round(100 * state.step / batch.totalSteps, 2),
        ))  # fmt: skip
        if state.step % spec.checkpoint.everySteps == 0:
            save_checkpoint(run, state)
    return loss


def step_metrics(run: Run, state: State, loss: float, lr: float, tps: float) -> dict[str, Any]:
    out: dict[str, Any] = {
        "step": state.step,
        "tokens": state.tokensSeen,
        "loss": loss,
        "lr": lr,
        "tokensPerSecond": tps,
        **run.ran,
    }
    norm = run.engine.get_global_grad_norm()
    if norm is not None:
        out["gradNorm"] = float(norm)
    if run.gpu:
        import torch

        peak = peak_flops(torch.cuda.get_device_name(run.device))
        if peak:
            out["mfu"] = tps / run.rdzv.world * run.flopsPerToken / peak
        out["peakMemoryGiB"] = torch.cuda.max_memory_allocated(run.device) / 2**30
    return out


def validate(run: Run) -> tuple[dict[str, float], dict[str, float]]:
    """Validation loss by position bucket and by domain (the mixture's domains)."""
    p = run.prepared
    if not p.validationCount:
        return {}, {}
    run.engine.eval()
    return loss_by_position(
        run.engine, p.validation, p.validationCount, length=p.batch.sequenceLength,
        sp=p.batch.sequenceParallel, sp_rank=run.spRank, dp=p.batch.dataParallel,
        dp_rank=run.dpRank, device=run.device, domains=tuple(sorted(p.mixture.manifest.get("domains") or {})),
    )  # fmt: skip


def write_final(
    run: Run,
    state: State,
    loss: float,
    validation: tuple[dict[str, float], dict[str, float]],
    lease: Lease,
) -> None:
    """final/ in the order the operator relies on: the model folder, metrics.jsonl, the
    succeeded progress with the result, and final/longreach.json last."""
    p = run.prepared
    spec = p.config.spec
    out = storage.join(spec.output.uri, "final")
    # Under ZeRO-3 the whole weights exist only after a collective gather.
    if spec.deepspeed.zeroStage == 3:
        weights = run.engine._zero3_consolidated_16bit_state_dict()
    else:
        weights = run.engine.module.state_dict() if run.rdzv.isMain else None
    if run.rdzv.isMain:
        local = p.staging / "final"
        import shutil

        shutil.rmtree(local, ignore_errors=True)
        run.engine.module.save_pretrained(str(local), state_dict=weights)
        p.tokenizer.save_pretrained(str(local))
        upload_folder(local, out, spec.storage)
        run.reporter.flush_metrics()
        by_position, by_domain = validation
        run.reporter.succeeded(
            TrainResult(
                uri=out, loss=loss, validationLoss=by_position, validationLossByDomain=by_domain
            )
        )
        summary = {
            "step": state.step,
            "tokensSeen": state.tokensSeen,
            "loss": loss,
            "validationLoss": by_position,
            "validationLossByDomain": by_domain,
            **run.ran,
            **p.rope,
        }
        lease.check()  # never commit over an output another writer has taken over
        storage.write_json(storage.join(out, "longreach.json"), summary, spec.storage)
        lease.finish()
        shutil.rmtree(local, ignore_errors=True)
    barrier()
