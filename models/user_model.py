"""The user-model network of a config: `build_user_model(config)` picks the arch (`GRUAEConfig.arch`), so training
(`models.train_user`) and loading (`models.infer_user`) have one code path for every member."""

from __future__ import annotations

from torch import nn
from ubp.models.gru_ae import GRUAEConfig, GRUAutoencoder


def build_user_model(config: GRUAEConfig) -> nn.Module:
    """A fresh network for `config`: `GRUAutoencoder` or `NextEventTransformer`, both with `config`,
    `forward(batch) -> (loss, stats)` and `encode(batch) -> [B, hidden]`."""
    if config.arch == "next_event":
        from ubp.models.next_event import NextEventTransformer

        return NextEventTransformer(config)
    return GRUAutoencoder(config)
