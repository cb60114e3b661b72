"""Load the model's tokenizer from a URI: a tokenizer.json file or a Hugging Face folder."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from longreach.contract.common import StorageSpec
from longreach.contract.datamixture import TokenizerSpec
from longreach.contract.errors import InputError
from longreach.contract.storage import filesystem, join

BOS_NAMES = ("<s>", "<|begin_of_text|>", "<bos>", "[CLS]", "<|endoftext|>")
_LOADED: dict[str, Any] = {}
EOS_NAMES = ("</s>", "<|end_of_text|>", "<eos>", "[SEP]", "<|endoftext|>")


@dataclass(frozen=True)
class TokenizerInfo:
    """What workers need to rebuild the tokenizer, and what the manifest records."""

    uri: str
    json: str
    """The tokenizer.json text (workers build `tokenizers.Tokenizer.from_str` from it)."""
    bos_id: int | None
    eos_id: int | None
    add_bos: bool
    add_eos: bool
    bos_token: str | None
    eos_token: str | None
    vocab_size: int

    @property
    def document_bos(self) -> int | None:
        """The id put before each document, or None."""
        return self.bos_id if self.add_bos else None

    @property
    def document_eos(self) -> int | None:
        """The id put after each document, or None."""
        return self.eos_id if self.add_eos else None

    def load(self) -> Any:
        """The tokenizer, built once per process (a Llama-3 tokenizer.json takes ~0.3 s)."""
        key = hashlib.sha256(self.json.encode()).hexdigest()
        if key not in _LOADED:
            from tokenizers import Tokenizer

            _LOADED.clear()
            _LOADED[key] = Tokenizer.from_str(self.json)
        return _LOADED[key]

    def manifest(self) -> dict[str, Any]:
        return {
            "uri": self.uri,
            "bosTokenId": self.bos_id,
            "eosTokenId": self.eos_id,
            "bosToken": self.bos_token,
            "eosToken": self.eos_token,
            "addBos": self.add_bos,
            "addEos": self.add_eos,
            "vocabSize": self.vocab_size,
        }


def _read_text(uri: str, storage: StorageSpec | None) -> str | None:
    fs, path = filesystem(uri, storage)
    try:
        with fs.open(path, "r", encoding="utf-8") as f:
            return f.read()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _token_name(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def tokenizer_info(spec: TokenizerSpec, storage: StorageSpec | None) -> TokenizerInfo:
    """Read and check the tokenizer; InputError naming the URI and the fix when it cannot load
    or lacks the BOS/EOS token the spec asks for."""
    uri = spec.uri
    try:
        if uri.rstrip("/").endswith(".json"):
            text, config = _read_text(uri, storage), {}
        else:
            text = _read_text(join(uri, "tokenizer.json"), storage)
            config_text = _read_text(join(uri, "tokenizer_config.json"), storage)
            config = json.loads(config_text) if config_text else {}
        if text is None:
            raise InputError(
                f"tokenizer.uri {uri!r}: no tokenizer.json there; point it at a tokenizer.json "
                "file or a Hugging Face folder that has one (fast tokenizers only)"
            )
        from tokenizers import Tokenizer

        tok = Tokenizer.from_str(text)
    except InputError:
        raise
    except Exception as exc:
        raise InputError(
            f"tokenizer.uri {uri!r}: cannot load the tokenizer ({type(exc).__name__}: {exc})"
        ) from exc

    def find(configured: Any, names: tuple[str, ...]) -> tuple[str | None, int | None]:
        candidates = [n for n in (_token_name(configured),) if n] + list(names)
        for name in candidates:
            tid = tok.token_to_id(name)
            if tid is not None:
                return name, tid
        return None, None

    bos_token, bos_id = find(config.get("bos_token"), BOS_NAMES)
    eos_token, eos_id = find(config.get("eos_token"), EOS_NAMES)
    if spec.addBos and bos_id is None:
        raise InputError(
            f"tokenizer.uri {uri!r}: no BOS token found (tried bos_token of tokenizer_config.json "
            f"and {', '.join(BOS_NAMES)}); set tokenizer.addBos: false or add one"
        )
    if spec.addEos and eos_id is None:
        raise InputError(f"tokenizer.uri {uri!r}: no EOS token found; set tokenizer.addEos: false")
    return TokenizerInfo(
        uri=uri,
        json=text,
        bos_id=bos_id,
        eos_id=eos_id,
        add_bos=spec.addBos,
        add_eos=spec.addEos,
        bos_token=bos_token,
        eos_token=eos_token,
        vocab_size=tok.get_vocab_size(with_added_tokens=True),
    )
