"""Model backends: greedy generation for a batch of cells.

- transformers: bf16 and FlashAttention-2 on a GPU when flash-attn is installed (SDPA
  otherwise), float32 on CPU; RoPE settings come from the model's config.json as
  transformers reads them (`rope_parameters`), which is where a ContextExtension writes its
  new base or scaling. Several GPUs: layers spread with device_map="auto" (needs accelerate).
  The prompt part a cell shares with the other cells of its length is computed once
  (prefix.py); a batch that runs out of GPU memory is split in halves until it fits.
- vllm: where the package is installed and a GPU is present; prompts go in as token ids so
  the contexts are exactly the ones built.

A backend is anything with `name`, `batch_limit(requested)` and `generate(cells, n)`.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Protocol

from longreach.contract.errors import InputError
from longreach.jobs.needle import prefix
from longreach.jobs.needle.grid import Cell


class BackendError(InputError):
    """The requested backend cannot run here; the message says why and what to use."""


class Backend(Protocol):
    name: str

    def batch_limit(self, requested: int) -> int: ...
    def generate(self, cells: list[Cell], max_new_tokens: int) -> list[str]: ...


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def open_backend(
    choice: str, model_dir: str, tokenizer: Any, *, max_model_len: int, gpus: int
) -> Backend:
    """The backend `choice` (auto, transformers, vllm) for the model in `model_dir`."""
    import torch

    cuda = torch.cuda.is_available()
    if choice == "vllm" and not (cuda and installed("vllm")):
        why = "no GPU is visible" if not cuda else "the vllm package is not installed"
        raise BackendError(
            f"spec.backend: vllm cannot run here ({why}); use backend auto or transformers, "
            "or run on the eval image with vLLM on a GPU node"
        )
    if choice == "vllm" or (choice == "auto" and cuda and installed("vllm")):
        return VllmBackend(model_dir, max_model_len=max_model_len, gpus=max(1, gpus))
    return TransformersBackend(model_dir, tokenizer, gpus=gpus)


class TransformersBackend:
    """Hugging Face transformers, greedy decoding, left-padded batches. `prefix_reuse` False
    runs every prompt whole (the plain path, for comparison); `chunk` is the prefill piece."""

    name = "transformers"

    def __init__(
        self,
        model_dir: str,
        tokenizer: Any,
        gpus: int = 1,
        *,
        prefix_reuse: bool = True,
        chunk: int = prefix.CHUNK,
    ):
        import torch
        from transformers import AutoModelForCausalLM

        self.torch = torch
        self.tokenizer = tokenizer
        cuda = torch.cuda.is_available()
        kwargs: dict[str, Any] = {"dtype": torch.bfloat16 if cuda else torch.float32}
        kwargs["attn_implementation"] = (
            "flash_attention_2" if cuda and installed("flash_attn") else "sdpa"
        )
        if cuda and gpus > 1:
            if installed("accelerate"):
                kwargs["device_map"] = (
                    "auto"  # a 128K context of a 7B model needs more than one card
                )
            else:
                print("needle: accelerate is not installed; using one of the GPUs", flush=True)
        model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
        if cuda and "device_map" not in kwargs:
            model = model.to("cuda")
        self.model = model.eval()
        self.device = next(model.parameters()).device
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else (tokenizer.eos_token_id or 0)
        self.attn = kwargs["attn_implementation"]
        self.chain = prefix.PrefixChain(self.model, chunk) if prefix_reuse else None
        if self.chain is not None and not prefix.reusable(self.model):
            print("needle: the model's cache drops positions; prefix reuse is off", flush=True)
            self.chain = None
        self.cache_kw = prefix.cache_keyword(self.model)  # generate() takes the same name
        self.fits = 1 << 30  # the largest batch known to fit; halved on running out of memory

    def batch_limit(self, requested: int) -> int:
        return requested

    def generate(self, cells: list[Cell], max_new_tokens: int) -> list[str]:
        """Responses of `cells`, in batches that fit the GPU's memory."""
        out: list[str] = []
        while len(out) < len(cells):
            group = cells[len(out) : len(out) + self.fits]
            try:
                out += self._generate(group, max_new_tokens)
            except self.torch.OutOfMemoryError:
                if len(group) == 1:
                    raise
                self.fits = len(group) // 2
                self.torch.cuda.empty_cache()
                print(f"needle: batch {len(group)} ran out of memory; now {self.fits}", flush=True)
        return out

    def _generate(self, cells: list[Cell], max_new_tokens: int) -> list[str]:
        torch = self.torch
        width = max(len(c.input_ids) for c in cells)
        # Left padding keeps every prompt's last token at the end, where generation starts.
        ids = [[self.pad_id] * (width - len(c.input_ids)) + c.input_ids for c in cells]
        mask = [[0] * (width - len(c.input_ids)) + [1] * len(c.input_ids) for c in cells]
        # With prefix reuse the cache already holds all but each prompt's last token.
        cache = {}
        if self.chain is not None:
            cache[self.cache_kw] = prefix.prefilled_cache(self.chain, cells)
        with torch.inference_mode():
            out = self.model.generate(
                input_ids=torch.tensor(ids, device=self.device),
                attention_mask=torch.tensor(mask, device=self.device),
                max_new_tokens=max_new_tokens,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                pad_token_id=self.pad_id,
                **cache,
            )
        new = out[:, width:].tolist()
        return [t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)]


class VllmBackend:
    """vLLM on GPUs: all cells of a length are handed over at once; vLLM batches them itself.
    Written against vLLM's offline API (LLM.generate with token-id prompts); GPU-only, so not
    exercised on the CPU machines that run CI."""

    name = "vllm"

    def __init__(self, model_dir: str, *, max_model_len: int, gpus: int):
        import os

        from vllm import LLM

        # vLLM refuses a max_model_len above the config's max_position_embeddings unless told;
        # lengths past it are allowed here (flagged as extrapolation in the results).
        os.environ.setdefault("VLLM_ALLOW_LONG_MAX_MODEL_LEN", "1")
        self.llm = LLM(
            model=model_dir,
            dtype="bfloat16",
            max_model_len=max_model_len,
            tensor_parallel_size=gpus,
            enable_prefix_caching=True,  # cells of one length share the haystack up to the needle
            seed=0,
        )

    def batch_limit(self, requested: int) -> int:
        return 1 << 30

    def generate(self, cells: list[Cell], max_new_tokens: int) -> list[str]:
        from vllm import SamplingParams

        params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)
        prompts: list[Any] = [{"prompt_token_ids": c.input_ids} for c in cells]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text.strip() for o in outs]
