"""Activation checkpointing modes on a real (tiny) Llama: what the forward pass keeps for the
backward pass, measured with saved-tensor hooks, and that every mode computes the same
gradients. transformers skips checkpointing without a word for a model left in eval mode,
which is how `from_pretrained` returns it: on a GPU that once showed as memory growing with
length as if checkpointing were off."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from longreach.contract.contextextension import checkpointed_layers, checkpointing_mode
from longreach.contract.errors import InputError

pytestmark = pytest.mark.unit

MODES = ("none", "selective", "every:2", "full")


@pytest.fixture(scope="module")
def four_layers(tmp_path_factory: pytest.TempPathFactory, tokenizer_dir: Path) -> Path:
    """A 4-layer tiny Llama (so every:2 recomputes half the layers)."""
    from longreach.jobs.synthetic import build_tiny_llama

    return build_tiny_llama(
        tmp_path_factory.mktemp("model4"), tokenizer_dir, max_position_embeddings=128, layers=4
    )


def saved_and_grads(model_dir: Path, mode: str) -> tuple[int, dict[str, Any]]:
    """Bytes the forward pass saves for the backward pass (inputs shared with the caller
    counted once per save, as autograd holds them), and the parameters' gradients."""
    import torch
    from transformers import AutoConfig

    from longreach.jobs.train.model import load_model

    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(str(model_dir))
    model = load_model(str(model_dir), config, gpu=False, attention="sdpa", checkpointing=mode)
    ids = torch.randint(4, 100, (1, 96), generator=torch.Generator().manual_seed(1))
    sizes: list[int] = []

    def pack(t: torch.Tensor) -> torch.Tensor:
        sizes.append(t.numel() * t.element_size())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_ids=ids, labels=ids).loss
    saved = sum(sizes)
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters()}
    return saved, grads


def test_modes_keep_less_in_order_and_compute_the_same_gradients(four_layers: Path) -> None:
    results = {m: saved_and_grads(four_layers, m) for m in MODES}
    saved = {m: r[0] for m, r in results.items()}
    # none keeps everything; selective drops the MLP's and the norms' tensors; every:2 keeps
    # half the layers whole; full keeps each layer's input only.
    assert saved["none"] > saved["selective"] > saved["full"], saved
    assert saved["none"] > saved["every:2"] > saved["full"], saved
    assert saved["selective"] < 0.75 * saved["none"], saved
    assert saved["full"] < saved["none"] / 2, saved
    reference = results["none"][1]
    for mode in MODES[1:]:
        grads = results[mode][1]
        assert grads.keys() == reference.keys()
        for name, g in grads.items():
            assert g.abs().sum() > 0 or reference[name].abs().sum() == 0, (mode, name)
            assert g.allclose(reference[name], rtol=1e-5, atol=1e-7), (mode, name)


def test_selective_keeps_weights_names_and_class_names(four_layers: Path) -> None:
    """The recomputed modules keep their parameters, state-dict keys and class names, so
    save_pretrained writes the same folder."""
    from transformers import AutoConfig

    from longreach.jobs.train.model import load_model

    config = AutoConfig.from_pretrained(str(four_layers))
    plain = load_model(str(four_layers), config, gpu=False, attention="sdpa", checkpointing="none")
    sel = load_model(
        str(four_layers), config, gpu=False, attention="sdpa", checkpointing="selective"
    )
    assert list(plain.state_dict()) == list(sel.state_dict())
    assert type(sel.model.layers[0].mlp).__name__ == type(plain.model.layers[0].mlp).__name__


def test_the_bool_values_mean_what_they_meant() -> None:
    assert checkpointing_mode(True) == "full" and checkpointing_mode(False) == "none"
    assert checkpointing_mode("every:1") == "full"
    assert checkpointed_layers("every:3", 7) == [True, False, False, True, False, False, True]
    assert checkpointed_layers("selective", 3) == [False] * 3


def test_selective_needs_a_llama_shaped_model() -> None:
    import torch

    from longreach.jobs.train.model import enable_checkpointing

    with pytest.raises(InputError, match=r"deepspeed\.activationCheckpointing: selective"):
        enable_checkpointing(torch.nn.Linear(2, 2), "selective")


@pytest.mark.integration
def test_the_job_trains_with_a_planned_mode_and_records_what_ran(
    tmp_path: Path, tiny_model: Path, vocab_size: int
) -> None:
    """activationCheckpointing auto, resolved as the operator does (every:2 written into the
    job's config): the job runs that mode and every metrics line and final/longreach.json say
    which attention, kernels and checkpointing ran."""
    from longreach.contract import storage

    from .helpers import make_setup, metrics, run, tail

    setup = make_setup(
        str(tmp_path / "store"), tmp_path, tiny_model, vocab_size,
        deepspeed={"activationCheckpointing": "auto"}, extra={"checkpointing": "every:2"},
    )  # fmt: skip
    proc = run(setup)
    assert proc.returncode == 0, tail(proc)
    assert "attention sdpa (auto: CPU runs SDPA), kernels none (auto: no GPU)" in proc.stdout
    ran = {"attention": "sdpa", "kernels": "none", "checkpointing": "every:2"}
    lines = metrics(setup)
    assert lines and all(m.items() >= ran.items() for m in lines)
    summary = storage.read_json(storage.join(setup.output, "final/longreach.json"), setup.store)
    assert summary.items() >= ran.items()


@pytest.mark.slow
def test_compiled_layers_compute_the_same_gradients(tiny_model: Path) -> None:
    """training.compile: torch.compile of each decoder layer, here with selective
    checkpointing (a compiled region holding a checkpointed MLP), gives the eager gradients."""
    import torch
    from transformers import AutoConfig

    from longreach.jobs.train.model import decoder_layers, load_model

    config = AutoConfig.from_pretrained(str(tiny_model))
    ids = torch.randint(4, 100, (1, 64), generator=torch.Generator().manual_seed(2))
    eager, compiled = (
        load_model(str(tiny_model), config, gpu=False, attention="sdpa", checkpointing="selective")
        for _ in range(2)
    )
    for layer in decoder_layers(compiled):
        layer.compile()
    for model in (eager, compiled):
        model(input_ids=ids, labels=ids).loss.backward()
    for (name, a), (_, b) in zip(
        eager.named_parameters(), compiled.named_parameters(), strict=True
    ):
        assert torch.allclose(a.grad, b.grad, rtol=1e-4, atol=1e-6), name
