"""The base model (fetched by jobs/fetch.py): RoPE changed through its transformers config,
loaded with the best attention available, and written back out as final/."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longreach.contract import storage
from longreach.contract.common import StorageSpec
from longreach.contract.contextextension import ContextExtensionSpec, RopeSpec
from longreach.contract.errors import InputError

if TYPE_CHECKING:
    import torch

# Meta's Llama 3.1 values, used when rope.parameters leaves them out (transformers requires them).
_LLAMA3_DEFAULTS = {"low_freq_factor": 1.0, "high_freq_factor": 4.0}


def read_config(model_path: str) -> Any:
    """The model's transformers config (AutoConfig), with a clear error when it is unreadable."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model_path)
    except (OSError, ValueError) as e:
        raise InputError(f"model: cannot read config.json of {model_path}: {e}") from e


def rope_parameters(rope: RopeSpec, current: dict[str, Any], max_positions: int) -> dict[str, Any]:
    """`spec.rope` in transformers 5's `rope_parameters` form (rope_type, rope_theta, the type's keys)."""
    theta = rope.theta if rope.theta is not None else current.get("rope_theta", 10000.0)
    out: dict[str, Any] = {"rope_type": rope.type, "rope_theta": float(theta)}
    if rope.type == "default":
        return out
    out["factor"] = float(rope.factor or 1.0)
    if rope.type in ("yarn", "llama3", "longrope"):
        out["original_max_position_embeddings"] = (
            rope.originalMaxPositionEmbeddings
            or current.get("original_max_position_embeddings")
            or max_positions
        )
    if rope.type == "llama3":
        out.update({k: v for k, v in _LLAMA3_DEFAULTS.items() if k not in rope.parameters})
    out.update(rope.parameters)
    return out


def apply_rope(config: Any, spec: ContextExtensionSpec) -> dict[str, Any]:
    """Set the new RoPE and maximum positions on a transformers config; returns the new settings.

    Dynamic NTK computes its base from the ratio of the current length to max_position_embeddings,
    so for that type the base model's value stays; every other type learns the new length."""
    current = dict(getattr(config, "rope_parameters", None) or {})
    base_positions = int(config.max_position_embeddings)
    params = rope_parameters(spec.rope, current, base_positions)
    config.rope_parameters = params
    if spec.rope.type != "dynamic":
        config.max_position_embeddings = max(spec.sequenceLength, base_positions)
    validate = getattr(config, "validate_rope", None)
    if callable(validate):
        try:
            validate()
        except (KeyError, ValueError, TypeError) as e:
            raise InputError(f"rope: transformers rejects {params}: {e}") from e
    return {"ropeParameters": params, "maxPositionEmbeddings": config.max_position_embeddings}


def load_model(
    model_path: str, config: Any, *, gpu: bool, attention: str, checkpointing: str
) -> torch.nn.Module:
    """The model with the changed config, in training mode, checkpointing as `checkpointing`
    (full, none, selective or every:K; see `enable_checkpointing`). Call inside an
    `HfDeepSpeedConfig` scope for ZeRO-3 so weights load already partitioned.

    `from_pretrained` returns the model in eval mode, where transformers skips activation
    checkpointing without a word: training mode is what makes `checkpointing` take effect."""
    import torch
    from transformers import AutoModelForCausalLM

    dtype = torch.bfloat16 if gpu else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_path, config=config, dtype=dtype, attn_implementation=attention
    )
    enable_checkpointing(model, checkpointing)
    return model.train()


def enable_checkpointing(model: Any, mode: str) -> None:
    """Recompute in the backward pass what `mode` says, non-reentrant (which works with
    ZeRO-3's parameter hooks):

    - full / every:K: whole decoder layers (every K-th, the first included) through transformers;
    - selective: in every layer only the RMSNorms and the MLP, the cheap part at long lengths
      (no attention), which keep most of a layer's saved activations (the MLP's four
      intermediate-sized tensors, the norms' float32 copies); attention keeps its own."""
    from longreach.contract.contextextension import checkpointed_layers

    if mode == "none":
        return
    if mode == "selective":
        for layer in decoder_layers(model):
            for name in ("input_layernorm", "post_attention_layernorm", "mlp"):
                _recompute(getattr(layer, name))
        return
    # transformers 5.x renamed the method (the old name warns).
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    if mode.startswith("every:"):
        layers = decoder_layers(model)
        for layer, on in zip(layers, checkpointed_layers(mode, len(layers)), strict=True):
            layer.gradient_checkpointing = on


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a Llama-shaped transformers model (model.model.layers)."""
    layers = getattr(getattr(model, "model", None), "layers", None)
    if layers is None or not all(
        hasattr(x, n)
        for x in layers
        for n in ("input_layernorm", "post_attention_layernorm", "mlp")
    ):
        raise InputError(
            f"deepspeed.activationCheckpointing: selective and every:K need a Llama-shaped model "
            f"(model.layers[i] with input_layernorm, post_attention_layernorm and mlp); "
            f"{type(model).__name__} is not; use full or none"
        )
    return list(layers)


class _Recomputed:
    """Mixed into a module's class by `_recompute`: its call (hooks included, so ZeRO-3 gathers
    the weights again) runs under non-reentrant checkpointing while training with gradients."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        import torch
        from torch.utils.checkpoint import checkpoint

        call = super().__call__  # type: ignore[misc]
        if self.training and torch.is_grad_enabled():  # type: ignore[attr-defined]
            return checkpoint(call, *args, use_reentrant=False, **kwargs)
        return call(*args, **kwargs)


def _recompute(module: Any) -> None:
    """Give `module` a subclass with `_Recomputed` (same name): parameters and state-dict keys
    stay."""
    cls = type(module)
    if not issubclass(cls, _Recomputed):
        module.__class__ = type(cls.__name__, (_Recomputed, cls), {})


def model_tokenizer(model_path: str, spec: ContextExtensionSpec, manifest: dict[str, Any]) -> Any:
    """The model folder's tokenizer, else the mixture's (the manifest names it)."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(model_path)
    except (OSError, ValueError, TypeError):
        pass
    tok = manifest.get("tokenizer")
    uri = tok.get("uri") if isinstance(tok, dict) else tok
    if isinstance(uri, str):
        fs, path = storage.filesystem(uri, spec.storage)
        if "file" not in fs.protocol and fs.protocol != "local":
            local = Path(tempfile.gettempdir()) / "longreach-tokenizer"
            fs.get(path.rstrip("/") + "/", str(local) + "/", recursive=True)
            path = str(local)
        return AutoTokenizer.from_pretrained(path)
    raise InputError(
        f"model: no tokenizer in {spec.model.uri or spec.model.name} and none named by the "
        "mixture's manifest; save the tokenizer into the model folder"
    )


def upload_folder(local: Path, uri: str, store: StorageSpec | None) -> None:
    """Copy a local folder's files to `uri` file by file (S3 needs no directory objects; large
    files stream as multipart uploads). Completeness is signalled by a marker written after."""
    fs, root = storage.filesystem(uri, store)
    is_local = "file" in fs.protocol or fs.protocol == "local"
    for f in sorted(local.rglob("*")):
        if f.is_file():
            target = f"{root.rstrip('/')}/{f.relative_to(local)}"
            if is_local:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
            fs.put_file(str(f), target)
