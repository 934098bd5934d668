"""GRU autoencoder over a user's event sequence; its latent is the user's profile (RecSys Challenge 2025, 2nd place).

This module also holds what every user-model architecture shares: the config (`GRUAEConfig`, whose `arch` picks
the GRU-AE or the next-event transformer of `models.next_event`), the event embedding and the output heads' loss.

One event = its field embeddings (event type, sku, category, price, url, the mean of its 16 query codes, the mean of
its product's 16 name codes, a time token), summed (`combine="sum"`) or concatenated (`combine="concat"`, as the
seed's day+event member). A GRU encoder reads `BOS e1 .. en EOS`; the top layer's final hidden state is the latent.
A GRU decoder, started from the encoder's hidden state and with the latent added to every input, rebuilds
`e1 .. en EOS` from `BOS e1 .. en` (teacher forcing). Loss = sum over target fields of the cross-entropy on non-pad
targets (with `loss_norm`, each divided by the log of its field's classes); a time field (day or week) can be a
target like any other, and so can the name codes: one head scores all 16 positions (16 x the name alphabet) and the
field's loss is the mean over the positions, so 16 codes weigh as one field.

Unlike the seed code, both GRUs run on packed sequences, so pad steps never touch a hidden state and a user's
latent does not depend on who else is in the batch; and the output heads run only on the packed (non-pad)
positions whose target is not PAD. Large heads (sku/url, thousands of classes) can train with a sampled softmax
(`sampled_negatives` shared uniform negatives per step): the heads are most of a CPU step, and validation always
uses the full softmax.

A batch is a dict: one int64 tensor [B, T] per token field, "query" / "name" [B, T, 16], "lengths" [B] (tokens
incl. BOS/EOS). See `models.user_data.collate`. The member presets (which fields, which sizes) live in
`models.members`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence
from ubp.models.user_data import CODE_FIELDS, EVENT_FILTERS, TOKEN_FIELDS

from ubp.tables import OOV_ID, PAD_ID, QUERY_CODES

ALL_FIELDS: tuple[str, ...] = (*TOKEN_FIELDS, *CODE_FIELDS)  # the batch fields (`models.user_data`)


ARCHS: tuple[str, ...] = ("gru_ae", "next_event")


@dataclass
class GRUAEConfig:
    """The user-model config of both archs (the name predates the transformer): fields, sizes, schedule. `arch`
    "gru_ae" rebuilds the sequence from one latent; "next_event" (`models.next_event`) predicts each next event."""

    vocab_sizes: dict[str, int] = field(default_factory=dict)  # field -> size incl. the 4 reserved ids
    input_fields: tuple[str, ...] = ("event_type", "sku", "category", "price", "url", "query", "day")
    target_fields: tuple[str, ...] = ("event_type", "sku", "category", "price", "url")
    emb_dim: int = 64
    hidden: int = 128
    n_layers: int = 2
    dropout: float = 0.5
    max_len: int = 128  # incl. BOS/EOS
    combine: str = "sum"  # sum | concat: how an event's field embeddings become one input vector
    events: str = "all"  # all | product: which events a sequence keeps (`models.user_data.SequenceChunk`)
    sampled_negatives: int = 0  # > 0: sampled softmax in training for heads with > 4x this many classes
    loss_norm: bool = False  # each field's cross-entropy / log(its classes): every field's uniform-guess loss is 1
    lr: float = 1e-3
    batch_size: int = 256
    max_epochs: int = 30
    patience: int = 5
    arch: str = "gru_ae"  # gru_ae | next_event; a config saved before archs existed is a GRU-AE
    n_heads: int = 4  # next_event only: attention heads per layer

    @classmethod
    def preset(cls, name: str, vocab_sizes: dict[str, int], **overrides) -> GRUAEConfig:
        """The config of a member preset (`models.members`), e.g. `day_event`, `week_all`, or the older `small`."""
        from ubp.models.members import member

        cfg = cls(vocab_sizes=dict(vocab_sizes), **member(name).model)
        return replace(cfg, **overrides) if overrides else cfg

    @property
    def input_dim(self) -> int:
        """Width of one event's input vector (the GRUs' input size)."""
        return self.emb_dim * (len(self.input_fields) if self.combine == "concat" else 1)

    def __post_init__(self) -> None:
        self.input_fields = tuple(self.input_fields)
        self.target_fields = tuple(self.target_fields)
        unknown = [f for f in (*self.input_fields, *self.target_fields) if f not in ALL_FIELDS]
        if unknown:
            raise ValueError(f"unknown fields {unknown}; known: {ALL_FIELDS}")
        if "query" in self.target_fields:
            raise ValueError("query codes are an input only (16 codes per event), not a target")
        if self.combine not in ("sum", "concat"):
            raise ValueError(f"combine must be sum or concat, not {self.combine!r}")
        if self.events not in EVENT_FILTERS:
            raise ValueError(f"events must be one of {EVENT_FILTERS}, not {self.events!r}")
        missing = [f for f in {*self.input_fields, *self.target_fields} if f not in self.vocab_sizes]
        if self.vocab_sizes and missing:
            raise ValueError(f"vocab_sizes lacks {sorted(missing)}")
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, not {self.arch!r}")
        if self.arch == "next_event" and any(f in CODE_FIELDS for f in self.target_fields):
            raise ValueError("a next-event model predicts token fields only, not the 16 codes of a code field")
        if self.arch == "next_event" and (self.n_heads < 1 or self.hidden % self.n_heads):
            raise ValueError(f"hidden {self.hidden} must be a multiple of n_heads {self.n_heads}")

    def to_dict(self) -> dict:
        """JSON-ready fields. A GRU-AE leaves out the transformer's fields, and a member over every event the event
        filter, so an existing member's config.json and training run key are the same as before those fields
        existed (a finished run is still found, a version still warm-starts)."""
        d = asdict(self)
        d["input_fields"], d["target_fields"] = list(self.input_fields), list(self.target_fields)
        if self.arch == "gru_ae":
            del d["arch"], d["n_heads"]
        if self.events == "all":
            del d["events"]
        if not self.loss_norm:
            del d["loss_norm"]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> GRUAEConfig:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class EventEmbedding(nn.Module):
    """Per-field embeddings, summed or concatenated -> one vector per event. Ids beyond a table's size (e.g. a day
    index newer than the training data) map to OOV; PAD embeds to zero."""

    def __init__(self, config: GRUAEConfig) -> None:
        super().__init__()
        self.token_fields = [f for f in config.input_fields if f not in CODE_FIELDS]
        self.tables = nn.ModuleDict(
            {f: nn.Embedding(config.vocab_sizes[f], config.emb_dim, padding_idx=PAD_ID) for f in self.token_fields}
        )

        def bag(f: str) -> nn.EmbeddingBag | None:
            return (nn.EmbeddingBag(config.vocab_sizes[f], config.emb_dim, mode="mean", padding_idx=PAD_ID)
                    if f in config.input_fields else None)

        self.query, self.name_codes = bag("query"), bag("name")  # attribute names = the weights' keys
        self.sizes = {f: config.vocab_sizes[f] for f in config.input_fields}
        self.concat = config.combine == "concat"

    def _ids(self, x: torch.Tensor, f: str) -> torch.Tensor:
        return torch.where(x < self.sizes[f], x, torch.full_like(x, OOV_ID))

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = [self.tables[f](self._ids(batch[f], f)) for f in self.token_fields]  # each [B, T, E]
        for f, table in (("query", self.query), ("name", self.name_codes)):
            if table is not None:
                q = batch[f]  # [B, T, 16]
                B, T, K = q.shape
                parts.append(table(self._ids(q, f).reshape(B * T, K)).reshape(B, T, -1))  # [B, T, E]
        if self.concat:
            return torch.cat(parts, dim=-1)  # [B, T, E * n_fields]
        out = parts[0]
        for e in parts[1:]:
            out = out + e
        return out  # [B, T, E]


def target_width(f: str) -> int:
    """Targets per event of field f: 16 for a code field (a product's name codes), else 1."""
    return QUERY_CODES if f in CODE_FIELDS else 1


def field_logits(head: nn.Linear, h: torch.Tensor, f: str) -> torch.Tensor:
    """[n, H] -> [n, K, V_f] logits of field f's head (K = `target_width(f)` positions)."""
    return head(h).reshape(h.shape[0], target_width(f), -1)


def uses_sampled_softmax(config: GRUAEConfig, f: str) -> bool:
    """Whether field f's head trains with a sampled softmax: only single-target heads with > 4x
    `sampled_negatives` classes."""
    k = config.sampled_negatives
    return k > 0 and config.vocab_sizes[f] > 4 * k and target_width(f) == 1


def sampled_logits(head: nn.Linear, h: torch.Tensor, y: torch.Tensor, n_negatives: int) -> torch.Tensor:
    """Sampled softmax logits [n, 1 + K]: the target's logit (column 0) and K uniform negatives shared by the step
    (PAD never sampled; a negative equal to the row's target is masked out). Uniform proposals need no log-Q
    correction."""
    neg = torch.randint(PAD_ID + 1, head.out_features, (n_negatives,), device=h.device)  # [K]
    pos = (h * head.weight[y]).sum(-1, keepdim=True) + head.bias[y][:, None]  # [n, 1]
    negl = h @ head.weight[neg].T + head.bias[neg]  # [n, K]
    negl = negl.masked_fill(neg[None, :] == y[:, None], float("-inf"))
    return torch.cat([pos, negl], dim=1)


def loss_weight(config: GRUAEConfig, f: str) -> float:
    """A target field's weight in the summed loss: 1 / log(its classes) with `loss_norm` (a uniform guess then scores
    1 on every field), else 1."""
    return 1.0 / math.log(max(config.vocab_sizes[f], 2)) if config.loss_norm else 1.0


def heads_loss(heads: nn.ModuleDict, hidden: torch.Tensor, targets: dict[str, torch.Tensor], config: GRUAEConfig,
               sampled: bool) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
    """Sum over target fields of the mean cross-entropy of `heads[f](hidden)` [N, H] on the non-PAD targets ([N],
    or [N, 16] for a code field, whose mean runs over its positions too), and per-field stats {"loss", "correct",
    "count" (targets)}. `sampled`: large heads use the sampled softmax (training); otherwise the full softmax
    (validation, reported accuracy). Shared by every user-model arch."""
    total = hidden.new_zeros(())
    stats: dict[str, dict[str, torch.Tensor]] = {}
    for f, tgt in targets.items():
        tgt = tgt.reshape(tgt.shape[0], -1)  # [N, K]: K = 16 for a code field, else 1
        mask = (tgt != PAD_ID).any(-1)  # [N] positions with something to predict
        if not bool(mask.any()):
            continue
        h, y = hidden[mask], tgt[mask]  # [n, H], [n, K]: heads only where there is something to predict
        keep = y != PAD_ID  # [n, K]
        n = int(keep.sum())
        if sampled and uses_sampled_softmax(config, f):
            logits = sampled_logits(heads[f], h, y[:, 0], config.sampled_negatives)  # [n, 1 + negatives]
            loss = F.cross_entropy(logits.float(), torch.zeros_like(y[:, 0]))  # the target is column 0
            correct = (logits.argmax(-1) == 0).sum()
        else:
            logits = field_logits(heads[f], h, f)  # [n, K, V_f]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), y.reshape(-1),
                                   ignore_index=PAD_ID)  # mean over every (position, code) with a target
            correct = ((logits.argmax(-1) == y) & keep).sum()
        stats[f] = {"loss": loss.detach(), "correct": correct.detach(), "count": n}
        total = total + loss * loss_weight(config, f)
    return total, stats


class GRUAutoencoder(nn.Module):
    def __init__(self, config: GRUAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = EventEmbedding(c)
        self.drop = nn.Dropout(c.dropout)
        gru_dropout = c.dropout if c.n_layers > 1 else 0.0
        self.encoder = nn.GRU(c.input_dim, c.hidden, c.n_layers, batch_first=True, dropout=gru_dropout)
        self.decoder = nn.GRU(c.input_dim, c.hidden, c.n_layers, batch_first=True, dropout=gru_dropout)
        self.latent_to_input = nn.Linear(c.hidden, c.input_dim)
        # a code field's head scores its 16 positions at once: [H] -> [16 * V]
        self.heads = nn.ModuleDict(
            {f: nn.Linear(c.hidden, c.vocab_sizes[f] * target_width(f)) for f in c.target_fields})

    # -- helpers --------------------------------------------------------------------------------------------
    @staticmethod
    def _sorted(batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
        """The batch reordered by decreasing length (packing wants it) and the order to undo it."""
        lengths = batch["lengths"].to("cpu", torch.int64)
        lengths, order = torch.sort(lengths, descending=True, stable=True)
        dev_order = order.to(batch["event_type"].device)
        out = {k: v.index_select(0, dev_order) for k, v in batch.items() if k != "lengths"}
        return out, lengths, order

    def _encode_sorted(self, b: dict[str, torch.Tensor], lengths: torch.Tensor):
        emb = self.drop(self.embed(b))  # [B, T, E]
        packed = pack_padded_sequence(emb, lengths, batch_first=True, enforce_sorted=True)
        _, h = self.encoder(packed)  # h: [L, B, H], the state after each row's last real token
        return emb, h

    # -- public API ----------------------------------------------------------------------------------------
    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Latent profile [B, H] = the encoder's top-layer final hidden state (in the batch's row order)."""
        b, lengths, order = self._sorted(batch)
        _, h = self._encode_sorted(b, lengths)
        latent = h[-1]  # [B, H] sorted order
        inverse = torch.empty_like(order)
        inverse[order] = torch.arange(order.numel())
        return latent.index_select(0, inverse.to(latent.device))

    def _decode(self, batch: dict[str, torch.Tensor]):
        """Run encoder + teacher-forced decoder; return the decoder's packed outputs [N, H], the packed targets per
        field [N] ([N, 16] for a code field; N = non-pad decoder positions) and the batch order."""
        b, lengths, order = self._sorted(batch)
        emb, h = self._encode_sorted(b, lengths)
        latent = h[-1]  # [B, H]
        dec_in = emb[:, :-1] + self.latent_to_input(latent)[:, None, :]  # [B, T-1, E]: BOS e1 .. en
        dec_len = lengths - 1
        packed = pack_padded_sequence(dec_in, dec_len, batch_first=True, enforce_sorted=True)
        out, _ = self.decoder(packed, h)  # out.data: [N, H]
        B, T1 = dec_in.shape[:2]
        # flat index of every packed position, in packed order, to gather the targets e1 .. en EOS
        flat = torch.arange(B * T1, device=dec_in.device).reshape(B, T1)  # [B, T-1]
        flat_packed = pack_padded_sequence(flat, dec_len, batch_first=True, enforce_sorted=True).data  # [N]
        targets = {}
        for f in self.config.target_fields:
            t = b[f][:, 1:].reshape(B * T1, -1).index_select(0, flat_packed)  # [N, K]: K = 16 or 1
            t = t if f in CODE_FIELDS else t[:, 0]  # [N, 16] or [N]
            targets[f] = torch.where(t < self.config.vocab_sizes[f], t, torch.full_like(t, OOV_ID))
        return out.data, targets, (b, lengths, order, flat_packed, B, T1)

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, dict[str, float]]]:
        """Training loss (sum over fields of the mean CE on non-pad targets; a code field's mean runs over its
        positions too) and per-field stats {field: {"loss", "correct", "count"}} for accuracy (count: targets)."""
        hidden, targets, _ = self._decode(batch)
        return heads_loss(self.heads, hidden, targets, self.config, sampled=self.training)

    @torch.no_grad()
    def reconstruct(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Teacher-forced reconstruction: predicted ids [B, T-1] per target field ([B, T-1, 16] for a code field)
        for positions 1..T-1 (the targets of `forward`), PAD where the target is PAD, in the batch's row order."""
        hidden, targets, (b, lengths, order, flat_packed, B, T1) = self._decode(batch)
        out = {}
        for f, tgt in targets.items():
            tgt = tgt.reshape(tgt.shape[0], -1)  # [N, K]: K = 16 for a code field, else 1
            K = target_width(f)
            pred = torch.full((B * T1, K), PAD_ID, dtype=torch.long, device=hidden.device)
            mask = (tgt != PAD_ID).any(-1)  # [N]
            if mask.any():
                p = field_logits(self.heads[f], hidden[mask], f).argmax(-1)  # [n, K]
                pred[flat_packed[mask]] = torch.where(tgt[mask] != PAD_ID, p, torch.full_like(p, PAD_ID))
            pred = pred.reshape(B, T1, K) if K > 1 else pred.reshape(B, T1)  # sorted order
            inverse = torch.empty_like(order)
            inverse[order] = torch.arange(order.numel())
            out[f] = pred.index_select(0, inverse.to(pred.device))
        return out
