"""Next-event transformer over a user's event sequence; its last hidden state is the user's profile (RecSys
Challenge 2025, 2nd place: the `next_sku` / `next_url` members).

A small causal transformer (pre-LN, learned positions) reads `BOS e1 .. en` (the EOS of the batch is dropped); one
event is the same summed field embeddings as the GRU-AE's (`EventEmbedding`), projected to `hidden` when their
width differs. At position t the heads predict the target fields of event t+1, only where that event has a value
(e.g. the sku head learns from product events only; the last event predicts nothing: the EOS is no event). The
user's vector is the final-LayerNorm'd state at `en`: the one that would predict the event after the history.

Batches are right-padded, so the causal mask alone keeps every real position from seeing a pad: a user's states
(and vector) do not depend on batch-mates, without a key-padding mask (which would also rule out the fused causal
attention kernels). Pad positions compute garbage nobody reads. Large heads train with the GRU-AE's sampled
softmax (`heads_loss`); validation uses the full softmax.

Same interface as `GRUAutoencoder`: `config`, `forward(batch) -> (loss, stats)`, `encode(batch) -> [B, hidden]`.
"""

from __future__ import annotations

import torch
from torch import nn
from ubp.models.gru_ae import EventEmbedding, GRUAEConfig, heads_loss

from ubp.tables import OOV_ID, PAD_ID


class NextEventTransformer(nn.Module):
    def __init__(self, config: GRUAEConfig) -> None:
        super().__init__()
        self.config = config
        c = config
        self.embed = EventEmbedding(c)
        self.proj = nn.Linear(c.input_dim, c.hidden) if c.input_dim != c.hidden else nn.Identity()
        self.pos = nn.Embedding(c.max_len, c.hidden)
        self.drop = nn.Dropout(c.dropout)
        layer = nn.TransformerEncoderLayer(c.hidden, c.n_heads, 4 * c.hidden, c.dropout, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, c.n_layers, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(c.hidden)
        self.heads = nn.ModuleDict({f: nn.Linear(c.hidden, c.vocab_sizes[f]) for f in c.target_fields})

    def hidden_states(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Final-LayerNorm'd states [B, T-1, H] of the inputs `BOS e1 .. en` (the last column of the batch, an EOS
        or a pad, is never an input); a row's states past its `en` are garbage."""
        inputs = {k: v[:, :-1] for k, v in batch.items() if k not in ("lengths", "client_id")}
        x = self.proj(self.embed(inputs))  # [B, T-1, H]
        T1 = x.shape[1]
        if T1 > self.config.max_len:
            raise ValueError(f"sequence of {T1} inputs is longer than max_len {self.config.max_len}")
        x = self.drop(x + self.pos(torch.arange(T1, device=x.device))[None])  # [B, T-1, H]
        causal = nn.Transformer.generate_square_subsequent_mask(T1, device=x.device, dtype=x.dtype)  # [T-1, T-1]
        return self.ln_f(self.blocks(x, mask=causal, is_causal=True))  # [B, T-1, H]

    def encode(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """User vector [B, H]: the state at each row's last real event `en` (input position lengths - 2)."""
        h = self.hidden_states(batch)  # [B, T-1, H]
        last = (batch["lengths"] - 2).to(h.device)  # [B]
        return h[torch.arange(h.shape[0], device=h.device), last]

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, dict[str, torch.Tensor]]]:
        """Loss (sum over target fields of the mean CE of predicting event t+1's value from position t, where it
        has one) and per-field stats {field: {"loss", "correct", "count"}}."""
        h = self.hidden_states(batch)  # [B, T-1, H]
        T1 = h.shape[1]
        n_events = (batch["lengths"] - 2).to(h.device)  # [B]
        # position t predicts event t+1 (input positions 0..n-1 of a row; position n = `en` has no next event)
        valid = torch.arange(T1, device=h.device)[None, :] < n_events[:, None]  # [B, T-1]
        targets = {}
        for f in self.config.target_fields:
            t = batch[f][:, 1:][valid]  # [N] the next event's value, PAD where it has none
            targets[f] = torch.where(t < self.config.vocab_sizes[f], t, torch.full_like(t, OOV_ID))
        hidden = h[valid]  # [N, H]
        return heads_loss(self.heads, hidden, targets, self.config, sampled=self.training)

    @torch.no_grad()
    def predict_next(self, batch: dict[str, torch.Tensor], f: str) -> torch.Tensor:
        """The most likely field-f value [B] of the event after each row's history (never PAD)."""
        logits = self.heads[f](self.encode(batch))  # [B, V_f]
        logits[:, PAD_ID] = float("-inf")
        return logits.argmax(-1)
