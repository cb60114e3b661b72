"""Which attention backend and which kernels a run uses: the table lookup, the fallbacks, the
errors naming the field, and that an SDPA backend held by the setting is really held."""

from __future__ import annotations

import pytest

from longreach.contract.errors import InputError
from longreach.jobs.train import attention, kernels

pytestmark = pytest.mark.unit

TABLE = {
    "H200": [(32768, ["sdpa-flash", "sdpa"]), (131072, ["flash_attention_2", "sdpa-cudnn"])],
    "A100": [(10**9, ["sdpa"])],
}


def test_auto_takes_the_fastest_installed_backend_for_card_and_length() -> None:
    def pick(card: str, length: int, flash: bool) -> str:
        return attention.choose(
            "auto", gpu=True, card=card, length=length, table=TABLE, flash=flash
        ).backend

    assert pick("NVIDIA H200", 8192, flash=True) == "sdpa-flash"
    assert pick("NVIDIA H200", 32768, flash=True) == "sdpa-flash"
    assert pick("NVIDIA H200", 65536, flash=True) == "flash_attention_2"
    assert pick("NVIDIA H200", 131072, flash=False) == "sdpa-cudnn"  # next one when not installed
    assert pick("NVIDIA A100-SXM4-80GB", 131072, flash=True) == "sdpa"


def test_auto_falls_back_where_the_table_says_nothing() -> None:
    def choice(card: str, length: int, flash: bool) -> attention.Choice:
        return attention.choose(
            "auto", gpu=True, card=card, length=length, table=TABLE, flash=flash
        )

    # beyond the table's longest row, and a card it does not hold: flash-attn, else SDPA
    assert choice("NVIDIA H200", 262144, flash=True).backend == "flash_attention_2"
    assert choice("NVIDIA L4", 8192, flash=False).backend == "sdpa"
    assert "no measurement" in choice("NVIDIA L4", 8192, flash=False).reason
    cpu = attention.choose("auto", gpu=False, card="cpu", length=8192, table=TABLE, flash=True)
    assert (cpu.backend, cpu.implementation) == ("sdpa", "sdpa")


def test_sdpa_backends_load_the_model_with_sdpa() -> None:
    for name in ("sdpa", "sdpa-flash", "sdpa-cudnn"):
        c = attention.choose(name, gpu=True, flash=False)
        assert (c.backend, c.implementation) == (name, "sdpa")
    assert attention.choose("flash_attention_2", gpu=True, flash=True).implementation == (
        "flash_attention_2"
    )


def test_choices_that_cannot_run_here_name_the_field_and_the_fix() -> None:
    with pytest.raises(InputError, match=r"training.attention: flash_attention_2 .* flash-attn"):
        attention.choose("flash_attention_2", gpu=True, flash=False)
    with pytest.raises(InputError, match=r"training.attention: flash_attention_2 needs a GPU"):
        attention.choose("flash_attention_2", gpu=False, flash=True)
    with pytest.raises(InputError, match=r"training.attention: sdpa-cudnn .* no GPU"):
        attention.choose("sdpa-cudnn", gpu=False)


def test_the_measured_table_is_ordered_by_length() -> None:
    for rows in attention.MEASURED.values():
        lengths = [n for n, _ in rows]
        assert lengths == sorted(lengths) and all(backends for _, backends in rows)


def test_an_sdpa_backend_held_is_held() -> None:
    """On CPU there is no cuDNN kernel: held to it, SDPA must refuse rather than fall back;
    held to flash (which has a CPU kernel), or unrestricted, it runs."""
    import torch
    import torch.nn.functional as F

    q = torch.randn(1, 2, 16, 8)
    with attention.sdpa_scope("sdpa"), attention.sdpa_scope("flash_attention_2"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
    with attention.sdpa_scope("sdpa-flash"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)
    with attention.sdpa_scope("sdpa-cudnn"), pytest.raises(RuntimeError, match="No viable backend"):
        F.scaled_dot_product_attention(q, q, q, is_causal=True)


def test_kernels_auto_uses_liger_only_where_it_can_run() -> None:
    def auto(gpu: bool, installed: bool, model_type: str = "llama") -> kernels.Kernels:
        return kernels.choose("auto", gpu=gpu, model_type=model_type, installed=installed)

    assert auto(gpu=True, installed=True).liger
    assert not auto(gpu=False, installed=True).liger
    assert not auto(gpu=True, installed=False).liger
    assert not auto(gpu=True, installed=True, model_type="gpt_neox").liger
    assert not kernels.choose("none", gpu=True, model_type="llama", installed=True).liger
    # This machine has no liger-kernel (it is kept out of the CPU lock): looked up, not assumed.
    assert kernels.liger_installed() is False
    assert kernels.choose("auto", gpu=True, model_type="llama").name == "none"


def test_kernels_liger_where_it_cannot_run_names_the_field() -> None:
    with pytest.raises(InputError, match=r"training.kernels: liger .* not installed"):
        kernels.choose("liger", gpu=True, model_type="llama", installed=False)
    with pytest.raises(InputError, match=r"training.kernels: liger .* no GPU"):
        kernels.choose("liger", gpu=False, model_type="llama", installed=True)
    with pytest.raises(InputError, match=r"training.kernels: liger .* 'mistral'"):
        kernels.choose("liger", gpu=True, model_type="mistral", installed=True)
    assert kernels.choose("liger", gpu=True, model_type="llama", installed=True).liger
