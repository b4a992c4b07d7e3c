"""Text columns and the text model: the contract's checks, tokenization, the pretrained
encoder's weights (loaded, not random), LoRA's partial bundles, and config errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from raylight.config import ConfigError, load_train_config
from raylight.data.contract import check_batch
from raylight.data.text import TextBaseError, check_text, resolve_base, text_spec, tokenize
from raylight.models.text import TextClassifier

RULES = {"text": {"dtype": "text", "max_chars": 20}, "y": {"dtype": "category"}}


def test_check_text_reasons() -> None:
    assert check_text("  good film ", None) == ("good film", None)
    assert check_text("bon film ✓".encode(), None) == ("bon film ✓", None)
    assert check_text(b"\xff\xfe", None) == (None, "not valid UTF-8 text")
    assert check_text("   ", None) == (None, "empty text")
    assert check_text(42, None) == (None, "not text: int")
    assert check_text("x" * 21, 20)[1] == "text longer than max_chars=20 (21 characters)"


def test_contract_quarantines_bad_texts_with_reasons() -> None:
    batch = pd.DataFrame({
        "text": ["fine", "", None, b"\xff", "y" * 30],
        "y": ["a", "a", "b", "b", "a"],
    })  # fmt: skip
    out = check_batch(batch, RULES, False, ["text"], (1.0, 0.0, 0.0), 0)
    assert out["__error__"].isna().tolist() == [True, False, False, False, False]
    assert list(out["__error__"])[1:] == [
        "text: empty text",
        "text: missing value not allowed",
        "text: not valid UTF-8 text",
        "text: text longer than max_chars=20 (30 characters)",
    ]
    assert out["__raw__"].notna().sum() == 4 and out["text"].iloc[0] == "fine"


def test_tokenize_pads_truncates_and_refuses_another_tokenizer(tmp_path: Path) -> None:
    spec = text_spec("minilm", 8)
    ids = tokenize(["a good film", "word " * 50], spec)
    assert ids.shape == (2, 8) and ids.dtype == np.int64
    assert ids[0, 0] == 101 and 102 in ids[0] and ids[0, -1] == 0  # [CLS] … [SEP] [PAD]
    assert (ids[1] != 0).all() and ids[1, -1] == 102  # truncated, still ends with [SEP]
    # A base directory whose tokenizer differs from the one recorded at training is refused.
    other = tmp_path / "base"
    other.mkdir()
    for f in ("config.json", "tokenizer.json"):
        shutil.copy(resolve_base("minilm") / f, other / f)
    with (other / "tokenizer.json").open("a") as fh:
        fh.write(" ")
    with pytest.raises(TextBaseError, match="not the one this model was trained with"):
        tokenize(["x"], {**spec, "base": str(other)})
    with pytest.raises(TextBaseError, match="lacks"):
        resolve_base(str(tmp_path / "nowhere"))


def _embed(model: TextClassifier, texts: list[str], spec: dict) -> torch.Tensor:
    ids = torch.as_tensor(tokenize(texts, spec))
    keep = ids != 0
    with torch.no_grad():
        h = model.encoder.eval()(ids, keep)
    w = keep.unsqueeze(-1).float()
    return torch.nn.functional.normalize((h * w).sum(1) / w.sum(1), dim=-1)


def test_pretrained_encoder_embeds_meaning() -> None:
    """all-MiniLM-L6-v2's mean-pooled vectors: paraphrases close, unrelated far. Random or
    mis-loaded weights (a wrong name mapping, a missing LayerNorm) do not separate these."""
    spec = text_spec("minilm", 32)
    m = TextClassifier(32, 2, text_length=32, base_sha256=spec["weights_sha256"],
                       finetune="freeze")  # fmt: skip
    e = _embed(m, ["A cat sits on the mat.", "A kitten is sitting on a rug.",
                   "The stock market crashed today."], spec)  # fmt: skip
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 2] < 0.3, sim
    random = TextClassifier(32, 2, text_length=32, pretrained=False, finetune="freeze")
    r = _embed(random, ["A cat sits on the mat.", "The stock market crashed today."], spec)
    assert (r @ r.T)[0, 1] > 0.5  # random weights: everything looks alike


def test_lora_bundle_holds_only_adapters_and_head_and_reloads() -> None:
    torch.manual_seed(0)
    m = TextClassifier(16, 2, text_length=16, finetune="lora", lora_r=4)
    trainable = {k for k, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in k or k.startswith("net.") for k in trainable)
    part = m.bundle_state_dict()
    assert set(part) == trainable
    # LoRA B starts at zero: before training the model computes the base's function.
    base = TextClassifier(16, 2, text_length=16, finetune="freeze")
    base.net.load_state_dict(m.net.state_dict())
    x = torch.as_tensor(tokenize(["what a film"], text_spec("minilm", 16)), dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(m.eval()(x), base.eval()(x))
    # Trained adapters round-trip onto a fresh base; an incomplete part is refused.
    with torch.no_grad():
        for k, p in m.named_parameters():
            if "lora_B" in k:
                p.add_(0.01)
    fresh = TextClassifier(16, 2, text_length=16, finetune="lora", lora_r=4)
    fresh.load_bundle_state_dict(m.bundle_state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(x), m.eval()(x))
    broken = dict(list(m.bundle_state_dict().items())[1:])
    with pytest.raises(ValueError, match="missing"):
        fresh.load_bundle_state_dict(broken)


def test_base_with_other_weights_is_refused() -> None:
    with pytest.raises(ValueError, match="not the ones this model was trained on"):
        TextClassifier(16, 2, text_length=16, base_sha256="0" * 64)


def test_config_errors_for_text_models_and_data() -> None:
    with pytest.raises(ConfigError) as err:
        load_train_config(["experiment=rt_minilm", "model=mlp"])
    assert "model._target_" in str(err.value) and "text model" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_train_config(["data=penguins", "model=minilm"])
    assert "one text feature" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_train_config(["experiment=rt_minilm", "data.text.base=/no/such/base"])
    assert "data.text.base" in str(err.value) and "lacks" in str(err.value)
    with pytest.raises(ConfigError, match=r"data\.text\.max_length"):
        load_train_config(["experiment=rt_minilm", "data.text.max_length=600"])
    with pytest.raises(ConfigError, match="max_chars only applies to dtype: text"):
        load_train_config(["data=penguins", "+data.contract.columns.island.max_chars=3"])
