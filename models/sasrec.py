"""SASRec with a cold-start-friendly item table (arXiv:2507.19473, "Let It Go? Not Quite").

Item rows: 0 = PAD, 1..n_warm = warm items (seen in training), n_warm+1..n_items-1 = cold items (content only).
The item table is used both at the input and for the output logits (tied). Variants, one flag:

- `delta` (default): e_i = c_i (frozen content) + d_i (trainable), each d_i renormed to L2 <= delta_max after EVERY
  optimizer step (`constrain_`), no weight decay on d, cold rows of d kept at 0.
- `frozen`: delta with delta_max = 0 (pure content, only the transformer trains).
- `content_finetune`: the table is initialised from content and trained freely (no bound).
- `id_only`: a randomly initialised id table; cold items have no row that means anything, so they cannot be ranked
  (scored -inf).
- `history_avg`: no training; the user vector is the mean content vector of the history (`score_history_avg`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

VARIANTS: tuple[str, ...] = ("delta", "content_finetune", "frozen", "id_only", "history_avg")
TRAINED_VARIANTS: tuple[str, ...] = ("delta", "content_finetune", "frozen", "id_only")
CONTENT_VARIANTS: tuple[str, ...] = ("delta", "content_finetune", "frozen", "history_avg")


@dataclass
class SASRecConfig:
    n_items: int = 2  # rows of the item table incl. PAD row 0 (warm + cold + 1)
    n_warm: int = 1  # warm items occupy rows 1..n_warm
    d_model: int = 64
    max_len: int = 64
    n_blocks: int = 2
    n_heads: int = 1
    dropout: float = 0.3
    variant: str = "delta"
    delta_max: float = 0.5
    lr: float = 1e-3
    weight_decay: float = 0.0  # applied to transformer weights only, never to the deltas
    batch_size: int = 128

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"unknown variant {self.variant!r}; choose one of {VARIANTS}")
        if self.variant == "frozen":
            self.delta_max = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class ItemTable(nn.Module):
    """The (n_items, d) item table of one variant: content buffer and/or trainable rows."""

    def __init__(self, config: SASRecConfig, content: torch.Tensor | None) -> None:
        super().__init__()
        self.config = config
        n, d = config.n_items, config.d_model
        if config.variant != "id_only":
            if content is None or tuple(content.shape) != (n, d):
                raise ValueError(f"variant {config.variant} needs a ({n}, {d}) content table")
            content = content.float().clone()
            content[0] = 0.0
        self.delta: nn.Parameter | None = None
        self.table: nn.Parameter | None = None
        if config.variant in ("delta", "frozen"):
            self.register_buffer("content", content)
            if config.delta_max > 0:
                self.delta = nn.Parameter(torch.zeros(n, d))
        elif config.variant == "content_finetune":
            self.register_buffer("content", content)  # kept for reference; the table starts from it
            self.table = nn.Parameter(content.clone())
        elif config.variant == "id_only":
            self.register_buffer("content", torch.zeros(0, d))
            self.table = nn.Parameter(torch.randn(n, d) / math.sqrt(d))
        else:
            raise ValueError(f"variant {config.variant} has no trainable item table")

    def weight(self) -> torch.Tensor:
        """(n_items, d) item vectors as the model uses them."""
        if self.table is not None:
            return self.table
        return self.content + self.delta if self.delta is not None else self.content

    @torch.no_grad()
    def constrain_(self) -> None:
        """Renorm every delta row to L2 <= delta_max; PAD and cold rows stay exactly 0. Call after EVERY step."""
        if self.delta is None:
            return
        self.delta.data = torch.renorm(self.delta.data, p=2, dim=0, maxnorm=self.config.delta_max)
        self.delta.data[0] = 0.0
        self.delta.data[self.config.n_warm + 1 :] = 0.0


class CausalSelfAttention(nn.Module):
    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.dropout = config.dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).split(D, dim=2)
        q, k, v = (t.view(B, L, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (B, H, L, Dh)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).contiguous().view(B, L, D)  # (B, L, D)
        return self.proj(y)


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(LN(x)), then x + ffn(LN(x))."""

    def __init__(self, config: SASRecConfig) -> None:
        super().__init__()
        d = config.d_model
        self.ln1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(config)
        self.ln2 = nn.LayerNorm(d)
        self.ffn = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(d, d))
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), mask))
        return x + self.drop(self.ffn(self.ln2(x)))


class SASRec(nn.Module):
    def __init__(self, config: SASRecConfig, content: torch.Tensor | None = None) -> None:
        super().__init__()
        if config.variant == "history_avg":
            raise ValueError("history_avg has no network: use score_history_avg")
        self.config = config
        self.items = ItemTable(config, content)
        self.pos = nn.Embedding(config.max_len, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.n_blocks)])
        self.ln_f = nn.LayerNorm(config.d_model)

    def param_groups(self) -> list[dict]:
        """Optimizer groups: the deltas never get weight decay."""
        delta = [self.items.delta] if self.items.delta is not None else []
        others = [p for n, p in self.named_parameters() if n != "items.delta"]
        groups = [{"params": others, "weight_decay": self.config.weight_decay}]
        if delta:
            groups.append({"params": delta, "weight_decay": 0.0})
        return groups

    def encode(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) left-padded item rows (0 = PAD) -> (B, L, d) hidden states (zero at PAD positions)."""
        B, L = seq.shape
        E = self.items.weight()
        x = E[seq] * math.sqrt(self.config.d_model) + self.pos(torch.arange(L, device=seq.device))  # (B, L, d)
        x = self.drop(x)
        keep = seq != 0  # (B, L)
        causal = torch.ones(L, L, dtype=torch.bool, device=seq.device).tril()  # (L, L)
        eye = torch.eye(L, dtype=torch.bool, device=seq.device)
        mask = (causal & keep[:, None, :]) | eye  # (B, L, L): PAD keys hidden; a PAD query sees itself (no NaN)
        mask = mask[:, None]  # (B, 1, L, L)
        for block in self.blocks:
            x = block(x, mask) * keep[..., None]
        return self.ln_f(x) * keep[..., None]

    def loss(self, seq: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Full softmax cross-entropy over all warm items at every non-PAD position (no negative sampling)."""
        h = self.encode(seq)  # (B, L, d)
        E = self.items.weight()[: self.config.n_warm + 1]  # (1 + n_warm, d): cold items are not in the softmax
        logits = h @ E.T  # (B, L, 1 + n_warm)
        logits[..., 0] = float("-inf")
        return F.cross_entropy(logits.view(-1, logits.size(-1)), target.reshape(-1), ignore_index=0)

    @torch.no_grad()
    def score(self, seq: torch.Tensor) -> torch.Tensor:
        """(B, L) histories -> (B, n_items) scores for every item (PAD -inf; cold -inf for id_only)."""
        u = self.encode(seq)[:, -1]  # (B, d): left padding puts the newest event last
        scores = u @ self.items.weight().T  # (B, n_items)
        scores[:, 0] = float("-inf")
        if self.config.variant == "id_only":
            scores[:, self.config.n_warm + 1 :] = float("-inf")
        return scores

    def item_vectors(self) -> torch.Tensor:
        """(n_items, d) final item table (row 0 = PAD)."""
        return self.items.weight().detach()


@torch.no_grad()
def score_history_avg(content: torch.Tensor, seq: torch.Tensor) -> torch.Tensor:
    """Baseline with no training: user vector = mean content vector of the history. -> (B, n_items)."""
    keep = (seq != 0).float()  # (B, L)
    u = (content[seq] * keep[..., None]).sum(1) / keep.sum(1, keepdim=True).clamp(min=1)  # (B, d)
    scores = u @ content.T  # (B, n_items)
    scores[:, 0] = float("-inf")
    return scores
