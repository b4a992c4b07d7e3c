"""Text classification by fine-tuning a pretrained BERT-family encoder (all-MiniLM-L6-v2).

The encoder is a plain-PyTorch BERT whose parameter names are those of Hugging Face's
``BertModel``, so a base's ``model.safetensors`` loads as it is, offline, without
``transformers``; attention is ``scaled_dot_product_attention`` (fused/flash kernels on GPU).

Three ways to train it (``finetune``):

- ``full``: every weight trains; the bundle holds all of them.
- ``freeze``: the encoder is fixed, only the head trains; the bundle holds the head and names
  the base (its sha256), so it is a few KB.
- ``lora``: low-rank adapters (Hu et al. 2021) on the chosen projections train with the head;
  the bundle holds only adapters + head plus the base reference, and reloads onto the base.

Inputs are the preprocessor's token-id block (see ``raylight.data.text``); the attention mask is
``id != pad_id``; the sentence vector is the masked mean of the last layer (the pooling
all-MiniLM-L6-v2 was trained with) or the ``[CLS]`` vector.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from raylight.models.optim import adamw
from raylight.models.tabular import TabularMLP

FINETUNE_MODES = ("full", "freeze", "lora")
# Weights of a Hugging Face BERT checkpoint this encoder does not use.
_UNUSED_BASE_KEYS = ("embeddings.position_ids", "pooler.")


class LoRALinear(nn.Linear):
    """``nn.Linear`` plus a trainable low-rank update: ``W x + (alpha / r) B A x``.

    Subclassing keeps the base weight's name (``query.weight``), so base checkpoints load
    unchanged; ``B`` starts at zero, so training starts from the pretrained function.
    """

    def __init__(self, in_features: int, out_features: int, r: int, alpha: float, dropout: float):
        super().__init__(in_features, out_features)
        self.r = r
        self.scaling = alpha / r
        self.lora_A = nn.Parameter(torch.empty(r, in_features))
        self.lora_B = nn.Parameter(torch.zeros(out_features, r))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        update = F.linear(F.linear(self.lora_dropout(x), self.lora_A), self.lora_B)
        return super().forward(x) + update * self.scaling


def _linear(d_in: int, d_out: int, name: str, lora: dict[str, Any] | None) -> nn.Linear:
    if lora and name in lora["targets"]:
        return LoRALinear(d_in, d_out, lora["r"], lora["alpha"], lora["dropout"])
    return nn.Linear(d_in, d_out)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int, dropout: float, lora: dict[str, Any] | None):
        super().__init__()
        self.heads = heads
        self.query = _linear(hidden, hidden, "query", lora)
        self.key = _linear(hidden, hidden, "key", lora)
        self.value = _linear(hidden, hidden, "value", lora)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, n, self.heads, d // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            attn_mask=mask,
            dropout_p=self.dropout if self.training else 0.0,
        )
        return out.transpose(1, 2).reshape(b, n, d)


class _Output(nn.Module):
    """dense → dropout → residual → LayerNorm (BERT's post-norm sublayer output)."""

    def __init__(self, d_in: int, d_out: int, eps: float, dropout: float, name: str, lora: Any):
        super().__init__()
        self.dense = _linear(d_in, d_out, name, lora)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class _Attention(nn.Module):
    def __init__(self, cfg: dict[str, Any], lora: dict[str, Any] | None):
        super().__init__()
        h, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
        self.self = _SelfAttention(
            h, cfg["num_attention_heads"], cfg["attention_probs_dropout_prob"], lora
        )
        self.output = _Output(h, h, eps, cfg["hidden_dropout_prob"], "attention_output", lora)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask), x)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int, lora: dict[str, Any] | None):
        super().__init__()
        self.dense = _linear(hidden, inner, "intermediate", lora)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class _Layer(nn.Module):
    def __init__(self, cfg: dict[str, Any], lora: dict[str, Any] | None):
        super().__init__()
        h, inner = cfg["hidden_size"], cfg["intermediate_size"]
        self.attention = _Attention(cfg, lora)
        self.intermediate = _Intermediate(h, inner, lora)
        self.output = _Output(
            inner, h, cfg["layer_norm_eps"], cfg["hidden_dropout_prob"], "output", lora
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class _Embeddings(nn.Module):
    def __init__(self, cfg: dict[str, Any]):
        super().__init__()
        h = cfg["hidden_size"]
        self.word_embeddings = nn.Embedding(cfg["vocab_size"], h, padding_idx=cfg["pad_token_id"])
        self.position_embeddings = nn.Embedding(cfg["max_position_embeddings"], h)
        self.token_type_embeddings = nn.Embedding(cfg["type_vocab_size"], h)
        self.LayerNorm = nn.LayerNorm(h, eps=cfg["layer_norm_eps"])
        self.dropout = nn.Dropout(cfg["hidden_dropout_prob"])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        # One segment: token type 0 everywhere (row 0 of the type table).
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None]
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class _Encoder(nn.Module):
    def __init__(self, cfg: dict[str, Any], lora: dict[str, Any] | None):
        super().__init__()
        self.layer = nn.ModuleList(_Layer(cfg, lora) for _ in range(cfg["num_hidden_layers"]))


class BertEncoder(nn.Module):
    """BERT encoder with Hugging Face ``BertModel`` parameter names (no pooler).

    Args:
        config: The base's ``config.json`` (hidden_size, num_hidden_layers, ...).
        lora: None, or ``{"targets", "r", "alpha", "dropout"}`` for LoRA projections; targets
            name projections: query, key, value, attention_output, intermediate, output.
    """

    def __init__(self, config: dict[str, Any], lora: dict[str, Any] | None = None):
        super().__init__()
        cfg = {
            "layer_norm_eps": 1e-12,
            "hidden_dropout_prob": 0.1,
            "attention_probs_dropout_prob": 0.1,
            "type_vocab_size": 2,
            "pad_token_id": 0,
            **config,
        }
        if cfg.get("model_type", "bert") != "bert" or cfg.get("hidden_act", "gelu") != "gelu":
            raise ValueError(
                f"unsupported encoder (model_type={cfg.get('model_type')}, hidden_act="
                f"{cfg.get('hidden_act')}): raylight's text models run BERT-family encoders"
            )
        self.hidden_size = int(cfg["hidden_size"])
        self.embeddings = _Embeddings(cfg)
        self.encoder = _Encoder(cfg, lora)

    def forward(self, ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Last hidden states ``[B, L, H]``; ``keep`` ``[B, L]`` is True for real tokens."""
        x = self.embeddings(ids)
        mask = keep[:, None, None, :]  # broadcast over heads and query positions
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x


class TextClassifier(TabularMLP):
    """A pretrained encoder + classification head, fine-tuned in full, frozen or with LoRA.

    Training, validation metrics (``val_loss``, ``val_acc``) are :class:`TabularMLP`'s; the
    optimizer is AdamW with a separate learning rate for the head and a linear warm-up.

    Args:
        input_dim: Width of the token-id block (= text_length; set from the data).
        output_dim: Number of classes (set from the data).
        task: Must be ``classification`` (set from the data).
        text_length: Tokens per text (set from the data: ``data.text.max_length``).
        text_base: The base's name or directory (set from the data: ``data.text.base``).
        base_sha256: sha256 of the base's weights the model was trained on (set from the data);
            a base whose weights differ is refused when the bundle does not hold them.
        pad_id: Padding token id (set from the data).
        finetune: ``full``, ``freeze`` or ``lora``.
        pretrained: Start from the base's weights (False: random init, e.g. for throughput
            benchmarks where the weights are not on the machine).
        pooling: ``mean`` (masked mean of the last layer) or ``cls``.
        lora_r: LoRA rank.
        lora_alpha: LoRA scaling numerator (update scale = alpha / r).
        lora_dropout: Dropout on the LoRA input.
        lora_targets: Projections that get adapters.
        hidden_dim: Hidden layer of the head (0: a single linear layer).
        dropout: Dropout before the head.
        lr: Learning rate of the encoder (and its adapters).
        head_lr: Learning rate of the head.
        weight_decay: AdamW weight decay.
        warmup_steps: Linear learning-rate warm-up steps.
        fused_adamw: See :class:`~raylight.models.tabular.TabularMLP`.
    """

    INJECTED_ARGS = (
        "input_dim", "output_dim", "task", "text_length", "text_base", "base_sha256", "pad_id",
    )  # fmt: skip
    REPORTED_METRICS = {"classification": ("val_acc",)}

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        task: str = "classification",
        text_length: int = 64,
        text_base: str = "minilm",
        base_sha256: str | None = None,
        pad_id: int = 0,
        finetune: str = "lora",
        pretrained: bool = True,
        pooling: str = "mean",
        lora_r: int = 8,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.1,
        lora_targets: Sequence[str] = ("query", "value"),
        hidden_dim: int = 0,
        dropout: float = 0.1,
        lr: float = 1e-4,
        head_lr: float = 1e-3,
        weight_decay: float = 0.01,
        warmup_steps: int = 0,
        fused_adamw: bool = True,
    ) -> None:
        if task != "classification":
            raise ValueError("TextClassifier is a classifier (data.task=classification)")
        if finetune not in FINETUNE_MODES:
            raise ValueError(f"finetune must be one of {FINETUNE_MODES}, got {finetune!r}")
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be mean or cls, got {pooling!r}")
        if input_dim != text_length:
            raise ValueError(
                f"the data has {input_dim} features but text_length is {text_length}: a "
                "TextClassifier needs exactly one text column as its input"
            )
        super().__init__(
            input_dim, output_dim, task, hidden_dims=(), dropout=0.0, lr=lr,
            weight_decay=weight_decay, fused_adamw=fused_adamw,
        )  # fmt: skip
        self.save_hyperparameters()
        from raylight.data.text import base_config

        lora = None
        if finetune == "lora":
            if lora_r < 1:
                raise ValueError(f"lora_r must be >= 1, got {lora_r}")
            lora = {"targets": set(lora_targets), "r": int(lora_r), "alpha": float(lora_alpha),
                    "dropout": float(lora_dropout)}  # fmt: skip
        self.encoder = BertEncoder(base_config(text_base), lora)
        if pretrained:
            self._load_base(text_base, base_sha256)
        self.finetune = finetune
        self.pad_id = int(pad_id)
        self.pooling = pooling
        self.head_lr = head_lr
        self.warmup_steps = warmup_steps
        h = self.encoder.hidden_size
        head: list[nn.Module] = [nn.Dropout(dropout)] if dropout > 0 else []
        if hidden_dim:
            head += [nn.Linear(h, hidden_dim), nn.GELU()]
            h = hidden_dim
        head.append(nn.Linear(h, output_dim))
        self.net = nn.Sequential(*head)  # the head; TabularMLP's `net` slot
        for name, p in self.encoder.named_parameters():
            p.requires_grad = finetune == "full" or (finetune == "lora" and "lora_" in name)
        # What the bundle must hold: everything trained (the base is referenced, not copied).
        self._bundled = {k for k, p in self.named_parameters() if p.requires_grad} | {
            k for k, _ in self.named_buffers()
        }
        if finetune == "full":
            self._bundled = set(self.state_dict())

    def _load_base(self, base: str, expected_sha256: str | None) -> None:
        from safetensors.torch import load_file

        from raylight.data.text import WEIGHTS_FILE, resolve_base, weights_sha256

        got = weights_sha256(base)
        if got is None:
            raise ValueError(f"text base {base!r} has no {WEIGHTS_FILE} to start from")
        if expected_sha256 is not None and got != expected_sha256:
            raise ValueError(
                f"the weights of text base {base!r} are not the ones this model was trained "
                f"on (sha256 {got[:12]}… ≠ {expected_sha256[:12]}…): install the same base"
            )
        state = load_file(str(resolve_base(base) / WEIGHTS_FILE))
        state = {k: v for k, v in state.items() if not k.startswith(_UNUSED_BASE_KEYS)}
        missing, unexpected = self.encoder.load_state_dict(state, strict=False)
        missing = [k for k in missing if "lora_" not in k]
        if missing or unexpected:
            raise ValueError(
                f"text base {base!r} does not fit the encoder: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )

    # -- model --------------------------------------------------------------------------------

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        ids = features.long()
        keep = ids != self.pad_id
        hidden = self.encoder(ids, keep)
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            w = keep.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * w).sum(1) / w.sum(1).clamp_min(1.0)
        return self.net(pooled)

    def configure_optimizers(self) -> Any:
        encoder = [p for p in self.encoder.parameters() if p.requires_grad]
        groups = [{"params": list(self.net.parameters()), "lr": self.head_lr}]
        if encoder:
            groups.append({"params": encoder, "lr": self.lr})
        opt = adamw(groups, weight_decay=self.weight_decay, fused=self.fused_adamw)
        if not self.warmup_steps:
            return opt
        warm = max(int(self.warmup_steps), 1)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # -- bundle -------------------------------------------------------------------------------

    def bundle_state_dict(self) -> dict[str, torch.Tensor]:
        """Full fine-tune: every weight; freeze/LoRA: only what trained (head, adapters)."""
        return {k: v for k, v in self.state_dict().items() if k in self._bundled}

    def load_bundle_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Load a bundle's part onto the base; it must be exactly the part this model trains."""
        missing = sorted(self._bundled - set(state))
        unexpected = sorted(set(state) - self._bundled)
        if missing or unexpected:
            raise ValueError(
                f"bundle weights do not fit a {self.finetune} TextClassifier: missing "
                f"{missing[:5]}, unexpected {unexpected[:5]}"
            )
        self.load_state_dict(state, strict=False)
