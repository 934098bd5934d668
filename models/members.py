"""The user-model members: which fields each one reads and predicts, its sizes, and how its vector is served.

The four GRU-AE members the RecSys Challenge 2025 2nd-place team used, its two next-event transformers
(`models.next_event`), plus the older `small` / `paper` presets kept for comparison and old model versions.
`next_sku`, `next_url` and `sku_text` are opt-in (not in `DEFAULT_MEMBERS`):

| member | inputs | targets | emb / hidden / layers / dropout | epochs (patience) | served as |
|---|---|---|---|---|---|
| `day_event` | event type, day (concatenated 64 + 64) | event type, day | 64 / 128 / 2 / 0.5 | 30 (5) | centred, row L2 |
| `week_all` | week, event type, category, price, sku, url | all six | 512 / 512 / 3 / 0.1 | 10 (3) | centred, PCA 64, row L2 |
| `all_fields` | event type, category, price, sku, url | all five | 512 / 512 / 3 / 0.1 | 10 (3) | centred, PCA 64, row L2 |
| `next_sku` | event type, sku, category, price, url, day | the next event's sku | 128 / 128 / 4 (4 heads) / 0.1 | 10 (3) | centred, row L2 |
| `next_url` | event type, sku, category, price, url, day | the next event's url | 192 / 192 / 4 (6 heads) / 0.1 | 10 (3) | centred, row L2 |
| `sku_text` | event type, 16 name codes; product events only (max length 66) | both | 64 / 128 / 2 / 0.5 | 30 (5) | centred, PCA 64, row L2 |

`sku_text` reads what a user bought and carted as text codes rather than sku ids, so a sku outside the sku
vocabulary still says something.

A large member has a `cpu` size too (64 / 128 / 2: a 512-wide 3-layer GRU pair trains at a few hundred tokens/s on
two cores; 2 layers for the transformers, ~2.5x their 4-layer speed): on a machine without a GPU it trains at that
size unless asked for the full one (`full_size=True`);
the size used is recorded with the model. The serving transform (`post`) is fitted on the
training users after training and applied at embed time (`models.latent`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ubp.registry import DEFAULT_USER_MEMBERS

# members `ubp run` and the training DAG train, in this order; the first is the one served as `user_profiles`
DEFAULT_MEMBERS: tuple[str, ...] = DEFAULT_USER_MEMBERS

_ALL = ("event_type", "category", "price", "sku", "url")
_LARGE = dict(emb_dim=512, hidden=512, n_layers=3, dropout=0.1, max_epochs=10, patience=3, sampled_negatives=256)
_LARGE_CPU = dict(emb_dim=64, hidden=128, n_layers=2)  # a 2-core CPU: the day_event sizes
# next-event transformers: every token field but the week, predicting one field of the next event
_NEXT_IN = ("event_type", "sku", "category", "price", "url", "day")
_NEXT = dict(arch="next_event", n_layers=4, dropout=0.1, max_epochs=10, patience=3, sampled_negatives=256)
_NEXT_CPU = dict(n_layers=2)


@dataclass(frozen=True)
class PostSpec:
    """How a member's raw latent is served: centred always; then PCA to `pca_dim` (0 = keep all), optional
    whitening (unit variance per component), optional row L2 normalisation."""

    pca_dim: int = 0
    whiten: bool = False
    row_norm: bool = True


@dataclass(frozen=True)
class Member:
    name: str
    model: dict[str, Any]  # GRUAEConfig fields (arch, sizes, training schedule)
    cpu: dict[str, Any] = field(default_factory=dict)  # overrides when no GPU is available (smaller sizes)
    post: PostSpec = PostSpec()
    doc: str = ""


MEMBERS: dict[str, Member] = {
    m.name: m
    for m in (
        Member("day_event",
               dict(input_fields=("event_type", "day"), target_fields=("event_type", "day"), combine="concat",
                    emb_dim=64, hidden=128, n_layers=2, dropout=0.5, max_epochs=30, patience=5),
               post=PostSpec(row_norm=True),
               doc="time-aware: when the user was active and doing what"),
        Member("week_all",
               dict(input_fields=("week", *_ALL), target_fields=("week", *_ALL), **_LARGE),
               cpu=_LARGE_CPU, post=PostSpec(pca_dim=64),
               doc="every product/visit field plus the week, all rebuilt"),
        Member("all_fields",
               dict(input_fields=_ALL, target_fields=_ALL, **_LARGE),
               cpu=_LARGE_CPU, post=PostSpec(pca_dim=64),
               doc="every product/visit field, no time"),
        Member("next_sku",
               dict(input_fields=_NEXT_IN, target_fields=("sku",), emb_dim=128, hidden=128, n_heads=4, **_NEXT),
               cpu=_NEXT_CPU, post=PostSpec(row_norm=True),
               doc="causal transformer predicting the next product event's sku; opt-in"),
        Member("next_url",
               dict(input_fields=_NEXT_IN, target_fields=("url",), emb_dim=192, hidden=192, n_heads=6, **_NEXT),
               cpu=_NEXT_CPU, post=PostSpec(row_norm=True),
               doc="causal transformer predicting the next visit's url; opt-in"),
        Member("sku_text",
               dict(input_fields=("event_type", "name"), target_fields=("event_type", "name"), events="product",
                    max_len=66, emb_dim=64, hidden=128, n_layers=2, dropout=0.5, max_epochs=30, patience=5),
               post=PostSpec(pca_dim=64),
               doc="the names (16 text codes) of the last 64 products bought, added or removed, all rebuilt"),
        Member("small",
               dict(input_fields=("event_type", "sku", "category", "price", "url", "query", "day"),
                    target_fields=("event_type", "sku", "category", "price", "url"),
                    emb_dim=64, hidden=128, n_layers=2, dropout=0.5, max_epochs=30, patience=5),
               post=PostSpec(row_norm=False),
               doc="the older CPU preset (sum of all fields, no time target)"),
        Member("paper",
               dict(input_fields=("event_type", "sku", "category", "price", "url", "query", "day"),
                    target_fields=("event_type", "sku", "category", "price", "url"),
                    emb_dim=512, hidden=512, n_layers=3, dropout=0.1, max_epochs=10, patience=3),
               post=PostSpec(pca_dim=64),
               doc="the older large preset"),
    )
}


def member(name: str) -> Member:
    """The member called `name`, or a ValueError naming the known ones."""
    if name not in MEMBERS:
        raise ValueError(f"unknown member {name!r}; choose one of {sorted(MEMBERS)}")
    return MEMBERS[name]
