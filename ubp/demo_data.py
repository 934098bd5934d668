"""Synthetic raw data in the RecSys Challenge 2025 layout, with planted structure that the pipeline should learn.

Why synthetic: the real challenge data cannot be shipped, yet every stage (and `make demo`) needs input whose
ground truth is known, so tests and plots can check that profiles recover segments, churners and cold items.

What is planted (all of it written to `<out>/_truth/`, which ingest never reads):
- user segments, each with its own category and price-bucket preferences, plus per-user favourite categories
  (noise, so the task is learnable but not trivial);
- sessions with funnels: page visits, searches, add_to_cart -> product_buy, some remove_from_cart;
- search queries whose 16 codes are the session category's code centroid plus noise;
- churners (about 30%) whose activity fades and then stops at a random time in the last 40% of the period
  (at least its last 24 days), so that for as-of = end - 14 days some stop before and some after the as-of;
- weekday and hour-of-day seasonality, heavy-tailed (lognormal) activity per user, late joiners;
- a catalog whose items have a category, price bucket, 16 name codes and a text description built from
  per-category word lists; Zipf popularity within each category;
- new (cold) items released in the last days of the period only, popular in their category once released.

Everything is numpy-vectorised per chunk of users and streamed to one Parquet part per chunk and event type,
so memory is bounded by the chunk, not by the total number of events. Same arguments -> byte-identical files.
`SCALES["challenge"]` (`ubp demo-data --scale challenge`): the real data's size (1M users, ~169M events, 1.26M skus,
12.7M urls) with `CHALLENGE_RATES`, sessions whose event types come in the real data's proportions.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from ubp.errors import UbpError
from ubp.tables import (
    EVENT_TYPES,
    PRICE_BUCKETS,
    QUERY_CODES,
    RAW_EVENT_COLUMNS,
    RAW_PRODUCT_COLUMNS,
    RAW_PRODUCT_FILE,
    RAW_PRODUCT_TEXT_COLUMNS,
    RAW_PRODUCT_TEXT_FILE,
)

DEFAULT_END = date(2025, 6, 30)  # last day of the generated period (fixed so outputs are deterministic)
TRUTH_DIR = "_truth"
N_SEGMENTS = 8
CHURN_RATE = 0.30
NEW_ITEM_RATE = 0.07
NEW_ITEM_FROM = 0.93  # new items are released in the last 7% of the period (after the 0.9 time quantile)
CATALOG_BLOCK = 250_000  # catalog rows per row group of product_properties / product_text
SESSION_MAX_S = 3000  # every event lies within this many seconds after its session start
CHURN_FADE_DAYS = 21.0  # churners' activity fades over this many days before they stop


@dataclass(frozen=True)
class Rates:
    """What a session holds: 1 + Poisson(visits_extra) page visits; with probability search_p, 1 +
    Poisson(search_extra) searches; with add_p, 1 + Poisson(add_extra) add_to_cart events, each later bought
    (buy_p) or removed (remove_p); with direct_p, one buy without a cart event. The defaults are the demo's."""

    visits_extra: float = 2.0
    search_p: float = 0.3
    search_extra: float = 0.3
    add_p: float = 0.35
    add_extra: float = 0.5
    buy_p: float = 0.45
    remove_p: float = 0.17
    direct_p: float = 0.05

    def per_session(self) -> dict[str, float]:
        """Expected events of each type in one session."""
        adds = self.add_p * (1 + self.add_extra)
        return {"product_buy": adds * self.buy_p + self.direct_p, "add_to_cart": adds,
                "remove_from_cart": adds * self.remove_p, "page_visit": 1 + self.visits_extra,
                "search_query": self.search_p * (1 + self.search_extra)}


# Rows per event type of the real RecSys Challenge 2025 data (~6 months, ~169M events).
CHALLENGE_EVENTS = {"product_buy": 1_682_296, "add_to_cart": 5_235_882, "remove_from_cart": 1_697_891,
                    "page_visit": 150_713_186, "search_query": 9_571_258}


def rates_for(counts: dict[str, int], visits_extra: float = 7.0, search_p: float = 0.35, add_p: float = 0.2,
              buy_p: float = 0.27) -> Rates:
    """Session rates whose expected events per type are in the proportions of `counts`, for sessions of
    1 + visits_extra page visits (the free choices: session length and the shares of searching, adding and
    buying-after-adding sessions; the rest follows from the counts)."""
    visits = 1 + visits_extra
    per_visit = {k: v / counts["page_visit"] for k, v in counts.items()}
    searches, adds = per_visit["search_query"] * visits, per_visit["add_to_cart"] * visits
    buys, removes = per_visit["product_buy"] * visits, per_visit["remove_from_cart"] * visits
    direct = buys - adds * buy_p
    if not (searches > search_p and adds > add_p and 0 <= direct < 1 and removes / adds + buy_p <= 1):
        raise ValueError(f"no session rates with these choices give the proportions of {counts}")
    return Rates(visits_extra=visits_extra, search_p=search_p, search_extra=searches / search_p - 1, add_p=add_p,
                 add_extra=adds / add_p - 1, buy_p=buy_p, remove_p=removes / adds, direct_p=direct)


DEMO_RATES = Rates()
CHALLENGE_RATES = rates_for(CHALLENGE_EVENTS)
RATES = {"demo": DEMO_RATES, "challenge": CHALLENGE_RATES}

# Named sizes for `ubp demo-data --scale NAME`; explicit arguments override them.
SCALES: dict[str, dict[str, Any]] = {
    "challenge": {"users": 1_000_000, "days": 180, "skus": 1_260_000, "categories": 6_774, "urls": 12_700_000,
                  "rates": "challenge", "events_per_user": 169.0, "chunk_users": 10_000},
}

# Per-department word lists: the text of an item = its category's product type + department attributes, so a
# sentence encoder puts items of one category (and of one department) close together.
_DEPARTMENTS: dict[str, dict[str, list[str]]] = {
    "footwear": {
        "types": ["trail running shoes", "road running shoes", "hiking boots", "sandals", "sneakers",
                  "leather boots", "slippers", "football boots"],
        "attrs": ["lightweight", "waterproof", "cushioned", "breathable", "grippy sole", "wide fit", "slip-on"],
        "materials": ["mesh", "leather", "suede", "rubber", "knit"],
    },
    "clothing": {
        "types": ["t-shirt", "jeans", "rain jacket", "hoodie", "summer dress", "wool sweater", "chino trousers",
                  "swim shorts", "down jacket", "polo shirt"],
        "attrs": ["slim fit", "relaxed fit", "organic", "stretch", "quick-dry", "oversized", "classic cut"],
        "materials": ["cotton", "linen", "wool", "polyester", "denim"],
    },
    "electronics": {
        "types": ["wireless headphones", "bluetooth speaker", "smartphone case", "usb-c charger", "smartwatch",
                  "gaming mouse", "mechanical keyboard", "tablet stand", "power bank"],
        "attrs": ["fast charging", "noise cancelling", "long battery life", "compact", "ergonomic", "rgb lit"],
        "materials": ["aluminium", "plastic", "silicone", "glass", "carbon fibre"],
    },
    "home": {
        "types": ["coffee maker", "frying pan", "bed sheets", "desk lamp", "storage box", "bath towel",
                  "kitchen knife", "scented candle", "throw pillow"],
        "attrs": ["dishwasher safe", "non-stick", "soft touch", "energy saving", "stackable", "hand made"],
        "materials": ["stainless steel", "ceramic", "bamboo", "cotton", "cast iron"],
    },
    "beauty": {
        "types": ["face cream", "shampoo", "lipstick", "perfume", "sunscreen", "hair dryer", "nail polish"],
        "attrs": ["fragrance free", "for sensitive skin", "long lasting", "vegan", "hydrating", "matte"],
        "materials": ["natural oils", "aloe vera", "shea butter", "vitamin c", "argan oil"],
    },
    "sports": {
        "types": ["yoga mat", "dumbbells", "tennis racket", "bike helmet", "camping tent", "sleeping bag",
                  "water bottle", "fitness tracker"],
        "attrs": ["foldable", "adjustable", "ultralight", "durable", "insulated", "anti-slip"],
        "materials": ["foam", "steel", "nylon", "graphite", "polycarbonate"],
    },
    "toys": {
        "types": ["building blocks", "plush bear", "board game", "puzzle", "remote control car", "doll house"],
        "attrs": ["for ages 3+", "educational", "colourful", "battery powered", "family size", "travel size"],
        "materials": ["wood", "plastic", "plush", "cardboard", "metal"],
    },
    "grocery": {
        "types": ["ground coffee", "green tea", "dark chocolate", "olive oil", "pasta", "granola",
                  "sparkling water"],
        "attrs": ["organic", "fair trade", "sugar free", "gluten free", "family pack", "limited edition"],
        "materials": ["arabica", "whole grain", "cocoa", "extra virgin", "almond"],
    },
}
_QUALIFIERS = ["", "kids", "women's", "men's", "premium", "outdoor", "travel", "professional", "budget", "eco"]
_COLOURS = ["black", "white", "blue", "red", "green", "grey", "beige", "navy", "yellow", "pink"]
_BRANDS = ["Nordly", "Acme", "Veloce", "Kettle & Co", "Brightside", "Orbit", "Juniper", "Tallis", "Mirakel",
           "Fenwick", "Solace", "Quarry"]


@dataclass
class _Catalog:
    sku: np.ndarray  # (n_items,) int64 sku ids
    item_cat: np.ndarray  # (n_items,) category index
    price: np.ndarray  # (n_items,) int32 price bucket
    name_codes: np.ndarray  # (n_items, 16) uint8
    cat_type: list[tuple[str, str]]  # (n_cat,) department and product-type label
    attr_pick: np.ndarray  # (n_items, 4) random words of each item's text (see `_catalog_text`)
    is_new: np.ndarray  # (n_items,) bool
    release_s: np.ndarray  # (n_items,) int64 seconds since start; 0 for old items
    category_ids: np.ndarray  # (n_cat,) int64 category ids
    centroids: np.ndarray  # (n_cat, 16) float code centroids
    cat_items: np.ndarray  # item indices grouped by category, popularity order within category
    cat_pop_cdf: np.ndarray  # cat index + within-category cumulative popularity (for searchsorted sampling)
    cat_fallback: np.ndarray  # (n_cat,) an old (always available) item of each category
    url_ids: np.ndarray  # (n_urls,) int64
    cat_url_cdf: np.ndarray  # (n_cat * urls_per_cat,) flat cdf, like cat_pop_cdf
    urls_per_cat: int
    general_url_cdf: np.ndarray  # cdf over the general urls (placed after the category urls in url_ids)
    seg_url_start: int  # segment landing urls start here in url_ids, `seg_urls` per segment
    seg_urls: int


@dataclass
class _Users:
    client_id: np.ndarray  # (n,) int64
    segment: np.ndarray  # (n,) int
    join_s: np.ndarray  # (n,) int64 seconds since start
    stop_s: np.ndarray  # (n,) int64: churn time for churners, period length otherwise
    churned: np.ndarray  # (n,) bool
    rate: np.ndarray  # (n,) sessions per active day
    price_pref: np.ndarray  # (n,) float preferred price bucket
    favs: np.ndarray  # (n, 2) favourite category indices
    fav_weight: np.ndarray  # (n,) probability a session is about a favourite category


BIG_POPULATION = 1 << 24  # id ranges above this are drawn in O(n) memory (see `_distinct_ids`)


def _distinct_ids(rng: np.random.Generator, n: int, high: int) -> np.ndarray:
    """`n` distinct int64 ids in 1..high, sorted. Up to `BIG_POPULATION` the original draw (`rng.choice` over an
    arange: O(high) memory, kept so the demo sizes give the same bytes as before); above it, O(n) memory:
    oversampled uniform draws, de-duplicated, a random subset of n."""
    if high <= BIG_POPULATION:
        return np.sort(rng.choice(np.arange(1, high + 1), n, replace=False)).astype(np.int64)
    ids = np.zeros(0, np.int64)
    while len(ids) < n:
        ids = np.sort(np.r_[ids, rng.integers(1, high + 1, n - len(ids) + n // 10 + 16, dtype=np.int64)])
        ids = ids[np.r_[True, ids[1:] != ids[:-1]]]  # sorted distinct (np.unique hashes: ~10x slower here)
    keep = np.ones(len(ids), bool)
    keep[rng.permutation(len(ids))[: len(ids) - n]] = False  # a random subset of n, still sorted
    return ids[keep]


def _zipf_cdf(n: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1) ** a
    return np.cumsum(w) / w.sum()


def _grouped_cdf(group: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """For rows sorted by group: group + within-group cumulative share (sample with searchsorted(g + u))."""
    total = np.bincount(group, weights=weight)
    cum = np.cumsum(weight)
    starts = np.r_[0, np.cumsum(np.bincount(group))[:-1]]
    before = np.r_[0.0, cum][starts][group]
    cdf = group + (cum - before) / total[group]
    # the last element of each group must be exactly group + 1 so u < 1 never falls into the next group
    ends = np.cumsum(np.bincount(group)) - 1
    cdf[ends[ends >= 0]] = group[ends[ends >= 0]] + 1.0
    return cdf


def _sample_grouped(cdf: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Indices into the grouped arrays, one per entry of `group`."""
    u = rng.random(len(group)) * (1.0 - 1e-12)
    return np.minimum(np.searchsorted(cdf, group + u, side="right"), len(cdf) - 1)


def _build_catalog(rng: np.random.Generator, n_items: int, n_cat: int, n_urls: int, period_s: int) -> _Catalog:
    category_ids = _distinct_ids(rng, n_cat, 50 * n_cat)
    centroids = rng.uniform(20, 235, size=(n_cat, QUERY_CODES))
    cat_base_price = rng.uniform(5, 95, size=n_cat)
    # category sizes: uneven (lognormal) but every category gets >= 3 items
    size_w = rng.lognormal(0, 0.6, n_cat)
    sizes = 3 + np.floor(size_w / size_w.sum() * max(n_items - 3 * n_cat, 0)).astype(np.int64)
    sizes[: max(n_items - int(sizes.sum()), 0)] += 1
    item_cat = np.repeat(np.arange(n_cat), sizes)
    n_items = len(item_cat)
    sku = _distinct_ids(rng, n_items, 20 * n_items)
    rng.shuffle(sku)  # sku ids do not reveal the category
    price = np.clip(np.rint(cat_base_price[item_cat] + rng.normal(0, 18, n_items)), 0, PRICE_BUCKETS - 1)
    name_codes = rng.normal(0, 18, (n_items, QUERY_CODES))  # in place: the same values as centroid + noise
    name_codes += centroids[item_cat]
    name_codes = np.clip(np.rint(name_codes, out=name_codes), 0, 255, out=name_codes)

    # popularity rank within category: random order, new items slotted near the top (new arrivals sell)
    is_new = rng.random(n_items) < NEW_ITEM_RATE
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    is_new[starts] = False  # the first (most popular) item of every category is old: the fallback
    rank_key = rng.random(n_items) + np.where(is_new, -0.9, 0.0) + np.where(np.arange(n_items) == np.repeat(
        starts, sizes), -2.0, 0.0)
    order = np.lexsort((rank_key, item_cat))
    cat_items = order
    within_rank = np.arange(n_items) - np.repeat(starts, sizes)
    pop_w = 1.0 / (within_rank + 1.0) ** 1.1
    cat_pop_cdf = _grouped_cdf(item_cat[order], pop_w)
    cat_fallback = order[starts]
    release_s = np.zeros(n_items, np.int64)
    lo = int(NEW_ITEM_FROM * period_s)
    release_s[is_new] = rng.integers(lo, period_s - (period_s - lo) // 4, is_new.sum())

    # text descriptions
    dept_names = list(_DEPARTMENTS)
    all_types = [(d, t) for d in dept_names for t in _DEPARTMENTS[d]["types"]]
    cat_type = []
    for c in range(n_cat):
        d, t = all_types[c % len(all_types)]
        q = _QUALIFIERS[(c // len(all_types)) % len(_QUALIFIERS)]
        extra = c // (len(all_types) * len(_QUALIFIERS))
        label = f"{q} {t}".strip() + (f" series {extra}" if extra else "")
        cat_type.append((d, label))
    attr_pick = rng.integers(0, 1 << 30, (n_items, 4))  # rendered into text by `_catalog_text`, in blocks

    # urls: per-category pages (Zipf), general pages (Zipf), per-segment landing pages
    urls_per_cat = max(4, int(n_urls * 0.7) // n_cat)
    seg_urls = 12
    n_general = max(20, n_urls - urls_per_cat * n_cat - seg_urls * N_SEGMENTS)
    total_urls = urls_per_cat * n_cat + n_general + seg_urls * N_SEGMENTS
    url_ids = _distinct_ids(rng, total_urls, 10 * total_urls)
    rng.shuffle(url_ids)
    url_group = np.repeat(np.arange(n_cat), urls_per_cat)
    url_w = np.tile(1.0 / np.arange(1, urls_per_cat + 1) ** 1.0, n_cat)
    return _Catalog(
        sku=sku, item_cat=item_cat, price=price.astype(np.int32), name_codes=name_codes.astype(np.uint8),
        cat_type=cat_type, attr_pick=attr_pick, is_new=is_new, release_s=release_s, category_ids=category_ids, centroids=centroids,
        cat_items=cat_items, cat_pop_cdf=cat_pop_cdf, cat_fallback=cat_fallback, url_ids=url_ids,
        cat_url_cdf=_grouped_cdf(url_group, url_w), urls_per_cat=urls_per_cat,
        general_url_cdf=_zipf_cdf(n_general, 1.1), seg_url_start=urls_per_cat * n_cat + n_general,
        seg_urls=seg_urls,
    )


_PRICE_WORDS = ["budget", "low price", "mid price", "upper mid price", "premium"]


def _catalog_text(cat: _Catalog, lo: int, hi: int) -> list[str]:
    """The descriptions of items [lo, hi) (built per block, so a catalog of millions never holds them all)."""
    text = []
    for i in range(lo, hi):
        d, label = cat.cat_type[cat.item_cat[i]]
        dep = _DEPARTMENTS[d]
        a = cat.attr_pick[i]
        attrs = dep["attrs"]
        text.append(
            f"{label[0].upper()}{label[1:]}, {attrs[a[0] % len(attrs)]}, {_COLOURS[a[1] % len(_COLOURS)]}, "
            f"{dep['materials'][a[2] % len(dep['materials'])]}, {_PRICE_WORDS[int(cat.price[i]) * 5 // PRICE_BUCKETS]}"
            f". {d.capitalize()} by {_BRANDS[a[3] % len(_BRANDS)]}."
        )
    return text


def category_departments(n_cat: int) -> np.ndarray:
    """(n_cat,) department index of each category: the department whose words its items' texts are made of."""
    dept_of_type = [i for i, d in enumerate(_DEPARTMENTS) for _ in _DEPARTMENTS[d]["types"]]
    return np.array([dept_of_type[c % len(dept_of_type)] for c in range(n_cat)], dtype=np.int64)


def _build_segments(rng: np.random.Generator, n_cat: int,
                    coherent: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per segment: a category distribution (a few core categories hold most mass) and a price centre.

    `coherent`: a segment's core categories come from one or two departments (neighbours in text/content space),
    as a real shopper of running shoes also buys sports gear; by default they are random categories, so content
    says little about what a segment buys next. Same random draws either way."""
    n_core = min(n_cat, max(2, min(8, n_cat // N_SEGMENTS)))  # 50 categories: 6 per segment, disjoint
    background = rng.dirichlet(np.full(n_cat, 0.8))
    probs = np.empty((N_SEGMENTS, n_cat))
    perm = rng.permutation(n_cat)
    if coherent:  # department-major order, random within a department: consecutive cores share departments
        perm = perm[np.argsort(category_departments(n_cat)[perm], kind="stable")]
    for s in range(N_SEGMENTS):
        core = np.roll(perm, -s * n_core)[:n_core]  # disjoint cores while categories last
        p = 0.2 * background
        p[core] += 0.8 * rng.dirichlet(np.full(n_core, 2.0))
        probs[s] = p / p.sum()
    seg_cdf = (np.cumsum(probs, axis=1) + np.arange(N_SEGMENTS)[:, None]).ravel()
    seg_cdf[np.arange(1, N_SEGMENTS + 1) * n_cat - 1] = np.arange(1, N_SEGMENTS + 1)
    price_centre = np.linspace(12, 88, N_SEGMENTS)[rng.permutation(N_SEGMENTS)]
    return probs, seg_cdf, price_centre


def _build_users(rng: np.random.Generator, n: int, n_cat: int, period_s: int, seg_probs: np.ndarray,
                 price_centre: np.ndarray) -> _Users:
    client_id = _distinct_ids(rng, n, 30 * n)
    rng.shuffle(client_id)
    seg_w = rng.dirichlet(np.full(N_SEGMENTS, 6.0))
    segment = rng.choice(N_SEGMENTS, n, p=seg_w)
    late = rng.random(n) < 0.45
    join_s = np.where(late, rng.integers(0, period_s // 2, n), 0).astype(np.int64)
    churned = rng.random(n) < CHURN_RATE
    # churn time: uniform over the last 40% of the period (at least the last 24 days, so that with the usual
    # as-of = end - 14 days some churners stop before the as-of and some inside the target window)
    churn_lo = max(int(0.2 * period_s), period_s - max(int(0.4 * period_s), 24 * 86400))
    churn_at = rng.integers(churn_lo, period_s - 86400, n)
    churn_at = np.maximum(churn_at, join_s + 3 * 86400)
    churned &= churn_at < period_s - 3600
    stop_s = np.where(churned, churn_at, period_s).astype(np.int64)
    rate = rng.lognormal(np.log(0.33) - 0.5, 1.0, n)
    price_pref = np.clip(price_centre[segment] + rng.normal(0, 8, n), 0, PRICE_BUCKETS - 1)
    favs = rng.integers(0, n_cat, (n, 2))  # personal taste outside the segment: the noise
    fav_weight = rng.uniform(0.1, 0.4, n)
    return _Users(client_id, segment, join_s, stop_s, churned, rate, price_pref, favs, fav_weight)


def _intensity(start: datetime, days: int) -> tuple[np.ndarray, np.ndarray]:
    """Hourly session intensity (weekday x hour-of-day) and its cumulative sum, for inverse-CDF time sampling."""
    weekday_w = np.array([1.0, 0.95, 0.95, 1.0, 1.1, 1.35, 1.25])  # Mon..Sun
    hour_w = np.array([0.15, 0.1, 0.08, 0.08, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 1.0, 1.0,
                       1.1, 1.0, 0.95, 0.95, 1.0, 1.1, 1.3, 1.5, 1.6, 1.4, 0.9, 0.4])
    wd = (start.weekday() + np.arange(days)) % 7
    w = (weekday_w[wd][:, None] * hour_w[None, :]).ravel()  # (days * 24,)
    return w, np.r_[0.0, np.cumsum(w)]


def _cum_at(t: np.ndarray, w: np.ndarray, cum: np.ndarray) -> np.ndarray:
    b = np.minimum(t // 3600, len(w) - 1)
    return cum[b] + w[b] * (t - b * 3600) / 3600.0


def _simulate_chunk(rng: np.random.Generator, users: _Users, lo: int, hi: int, cat: _Catalog,
                    seg_cdf: np.ndarray, w: np.ndarray, cum: np.ndarray, period_s: int,
                    rates: Rates = DEMO_RATES) -> dict[str, dict]:
    """Events of users [lo, hi): per event type a dict of numpy columns (user index, t seconds, value)."""
    n_cat = len(cat.category_ids)
    uidx = np.arange(lo, hi)
    join, stop = users.join_s[uidx], users.stop_s[uidx]
    active_days = (stop - join) / 86400.0
    n_sess = np.maximum(rng.poisson(users.rate[uidx] * active_days), 1)
    s_user = np.repeat(uidx, n_sess)
    # session start: inverse CDF of the weekday/hour intensity between join and stop - SESSION_MAX_S
    a = _cum_at(users.join_s[s_user], w, cum)
    b = _cum_at(np.maximum(users.stop_s[s_user] - SESSION_MAX_S - 1, users.join_s[s_user]), w, cum)
    u = a + rng.random(len(s_user)) * (b - a)
    bins = np.clip(np.searchsorted(cum, u, side="right") - 1, 0, len(w) - 1)
    s_t = (bins * 3600 + np.clip((u - cum[bins]) / w[bins], 0, 0.9999) * 3600).astype(np.int64)
    s_t = np.minimum(s_t, np.maximum(users.stop_s[s_user] - SESSION_MAX_S - 1, users.join_s[s_user]))
    # churners fade out before they stop: thin their sessions in the last CHURN_FADE_DAYS
    fade = CHURN_FADE_DAYS * 86400
    left = (users.stop_s[s_user] - s_t) / fade
    keep = ~users.churned[s_user] | (left >= 1) | (rng.random(len(s_t)) < 0.2 + 0.8 * np.clip(left, 0, 1))
    s_user, s_t = s_user[keep], s_t[keep]
    n_s = len(s_user)
    # session focus category: favourite categories or the segment's distribution
    seg = users.segment[s_user]
    from_fav = rng.random(n_s) < users.fav_weight[s_user]
    seg_cat = np.searchsorted(seg_cdf, seg + rng.random(n_s) * (1 - 1e-12), side="right") - seg * n_cat
    seg_cat = np.clip(seg_cat, 0, n_cat - 1)
    fav_cat = users.favs[s_user, rng.integers(0, 2, n_s)]
    s_cat = np.where(from_fav, fav_cat, seg_cat)

    out: dict[str, dict] = {}

    def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Session index of each event and its position within the session."""
        sess = np.repeat(np.arange(n_s), counts)
        pos = np.arange(len(sess)) - np.repeat(np.cumsum(counts) - counts, counts)
        return sess, pos

    # page visits: category pages, general pages, the segment's landing pages
    n_visit = 1 + rng.poisson(rates.visits_extra, n_s)
    vs, vp = expand(n_visit)
    kind = rng.random(len(vs))
    cat_url = _sample_grouped(cat.cat_url_cdf, s_cat[vs], rng)
    gen_url = cat.urls_per_cat * n_cat + np.minimum(
        np.searchsorted(cat.general_url_cdf, rng.random(len(vs)), side="right"), len(cat.general_url_cdf) - 1)
    seg_url = cat.seg_url_start + seg[vs] * cat.seg_urls + rng.integers(0, cat.seg_urls, len(vs))
    url_i = np.where(kind < 0.6, cat_url, np.where(kind < 0.85, gen_url, seg_url))
    out["page_visit"] = {"u": s_user[vs], "t": s_t[vs] + vp * 45 + rng.integers(0, 45, len(vs)),
                         "v": cat.url_ids[url_i]}

    # searches: codes = centroid of the session's category (or, sometimes, of a random one) + noise
    n_search = (rng.random(n_s) < rates.search_p) * (1 + rng.poisson(rates.search_extra, n_s))
    ss, sp = expand(n_search)
    q_cat = np.where(rng.random(len(ss)) < 0.85, s_cat[ss], rng.integers(0, n_cat, len(ss)))
    codes = np.clip(np.rint(cat.centroids[q_cat] + rng.normal(0, 22, (len(ss), QUERY_CODES))), 0, 255)
    out["search_query"] = {"u": s_user[ss], "t": s_t[ss] + 20 + sp * 60 + rng.integers(0, 30, len(ss)),
                           "v": codes.astype(np.uint8)}

    # carts: adds of items from the focus category chosen by popularity and price fit; then buy or remove
    n_add = (rng.random(n_s) < rates.add_p) * (1 + rng.poisson(rates.add_extra, n_s))
    as_, ap = expand(n_add)
    add_t = s_t[as_] + 30 + ap * 50 + rng.integers(0, 50, len(as_))
    add_item = _pick_items(rng, cat, s_cat[as_], users.price_pref[s_user[as_]], add_t)
    out["add_to_cart"] = {"u": s_user[as_], "t": add_t, "v": add_item}
    r = rng.random(len(as_))
    bought = r < rates.buy_p
    removed = (r >= rates.buy_p) & (r < rates.buy_p + rates.remove_p)
    # a few direct buys without a cart event
    direct = rng.random(n_s) < rates.direct_p
    ds = np.flatnonzero(direct)
    d_t = s_t[ds] + rng.integers(0, 600, len(ds))
    d_item = _pick_items(rng, cat, s_cat[ds], users.price_pref[s_user[ds]], d_t)
    buy_u = np.r_[s_user[as_][bought], s_user[ds]]
    buy_t = np.r_[add_t[bought] + 60 + rng.integers(0, 600, bought.sum()), d_t]
    out["product_buy"] = {"u": buy_u, "t": buy_t, "v": np.r_[add_item[bought], d_item]}
    out["remove_from_cart"] = {"u": s_user[as_][removed],
                               "t": add_t[removed] + 30 + rng.integers(0, 900, removed.sum()),
                               "v": add_item[removed]}
    for ev in out.values():  # sort by (user, time) and drop accidental exact duplicates (overlapping sessions)
        ev["t"] = np.minimum(ev["t"], np.minimum(users.stop_s[ev["u"]], period_s) - 1)  # never past a stop
        key = ev["v"][:, 0] if ev["v"].ndim == 2 else ev["v"]
        order = np.lexsort((key, ev["t"], ev["u"]))
        for k in ev:
            ev[k] = ev[k][order]
        same = (ev["u"][1:] == ev["u"][:-1]) & (ev["t"][1:] == ev["t"][:-1])
        if ev["v"].ndim == 2:
            same &= (ev["v"][1:] == ev["v"][:-1]).all(axis=1)
        else:
            same &= ev["v"][1:] == ev["v"][:-1]
        keep = np.r_[True, ~same][: len(same) + 1] if len(ev["u"]) else np.zeros(0, bool)
        for k in ev:
            ev[k] = ev[k][keep]
    return out


def _pick_items(rng: np.random.Generator, cat: _Catalog, cat_idx: np.ndarray, price_pref: np.ndarray,
                t: np.ndarray, n_cand: int = 5) -> np.ndarray:
    """Item index per event: n_cand candidates by popularity in the category, the best price fit wins (with
    Gumbel noise); items not yet released at t are not available."""
    n = len(cat_idx)
    if n == 0:
        return np.zeros(0, np.int64)
    pos = _sample_grouped(cat.cat_pop_cdf, np.repeat(cat_idx, n_cand), rng)
    cand = cat.cat_items[pos].reshape(n, n_cand)  # (n, n_cand) item indices
    score = -np.abs(cat.price[cand] - price_pref[:, None]) / 8.0 + rng.gumbel(size=(n, n_cand))
    score = np.where(cat.release_s[cand] <= t[:, None], score, -np.inf)
    best = cand[np.arange(n), np.argmax(score, axis=1)]
    none = ~np.isfinite(score.max(axis=1))
    best[none] = cat.cat_fallback[cat_idx[none]]
    return best


def _code_strings(codes: np.ndarray):
    """(n, 16) uint8 -> pyarrow string array of "[c0 c1 ... c15]" (vectorised through arrow compute)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = len(codes)
    words = pa.array([str(i) for i in range(256)]).take(pa.array(codes.reshape(-1).astype(np.int32)))
    lists = pa.ListArray.from_arrays(pa.array(np.arange(0, n * QUERY_CODES + 1, QUERY_CODES, dtype=np.int32)),
                                     words)
    inner = pc.binary_join(lists, " ")
    return pc.binary_join_element_wise("[", inner, "]", "")


def _ts_array(epoch_s: np.ndarray, form: str):
    import pyarrow as pa

    arr = pa.array(epoch_s.astype(np.int64), pa.timestamp("s"))
    if form == "string":  # a seconds timestamp casts to "YYYY-MM-DD HH:MM:SS" (20x faster than pc.strftime)
        return arr.cast(pa.string())
    return arr.cast(pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))


def _event_schema(stem: str, form: str):
    import pyarrow as pa

    ts_type = pa.string() if form == "string" else pa.timestamp("us", tz="UTC")
    value_type = pa.string() if stem == "search_query" else pa.int64()
    cols = RAW_EVENT_COLUMNS[stem]
    return pa.schema([pa.field(cols[0], pa.int64()), pa.field(cols[1], ts_type), pa.field(cols[2], value_type)])


def _event_table(stem: str, ev: dict, users: _Users, cat: _Catalog, start_epoch: int, form: str):
    import pyarrow as pa

    if stem == "search_query":
        value = _code_strings(ev["v"])
    elif stem == "page_visit":
        value = pa.array(ev["v"], pa.int64())
    else:
        value = pa.array(cat.sku[ev["v"]], pa.int64())
    return pa.Table.from_arrays(
        [pa.array(users.client_id[ev["u"]], pa.int64()), _ts_array(start_epoch + ev["t"], form), value],
        schema=_event_schema(stem, form),
    )


def _bad_rows(rng: np.random.Generator, stem: str, table, n_bad: int, form: str, counts: dict[str, int]):
    """Copies of random rows, each broken in one way ingest must quarantine."""
    import pyarrow as pa

    rows = table.take(pa.array(rng.integers(0, table.num_rows, n_bad))).to_pydict()
    cid, ts, val = (rows[c] for c in RAW_EVENT_COLUMNS[stem])
    # a timestamp column cannot hold an unparseable value: there the bad timestamp is a null
    kinds = ["null_client_id", "negative_id", "bad_timestamp" if form == "string" else "null_timestamp",
             "future_timestamp"]
    if stem == "search_query":
        kinds[1] = "malformed_query"
    for i, k in enumerate(rng.integers(0, len(kinds), n_bad)):
        kind = kinds[k]
        counts[kind] = counts.get(kind, 0) + 1
        if kind == "null_client_id":
            cid[i] = None
        elif kind == "negative_id":
            val[i] = -int(val[i])
        elif kind == "malformed_query":
            val[i] = ["[1 2 3]", "[300 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15]", "not a query", ""][i % 4]
        elif kind == "bad_timestamp":
            ts[i] = ["2025-02-30 25:61:00", "yesterday"][i % 2]
        elif kind == "null_timestamp":
            ts[i] = None
        else:  # future_timestamp
            ts[i] = "2099-01-01 00:00:00" if form == "string" else datetime(2099, 1, 1, tzinfo=UTC)
    return pa.Table.from_pydict(dict(zip(RAW_EVENT_COLUMNS[stem], (cid, ts, val), strict=True)),
                                schema=table.schema)


def _clean_outputs(out: Path) -> None:
    """Remove what an earlier run of this generator wrote (and only that), so a rerun gives the same dir.
    Raw files that the generator did not write (no `_truth/meta.json` next to them) are never deleted."""
    stems = [*EVENT_TYPES, RAW_PRODUCT_FILE, RAW_PRODUCT_TEXT_FILE]
    found = [p.name for s in stems for p in (out / s, out / f"{s}.parquet") if p.exists()]
    if found and not (out / TRUTH_DIR / "meta.json").is_file():
        raise UbpError(f"{out} already holds raw files not written by `ubp demo-data` ({', '.join(found[:3])}"
                       f"{', ...' if len(found) > 3 else ''}); choose an empty or earlier demo directory")
    for stem in stems:
        for p in (out / stem, out / f"{stem}.parquet"):
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    if (out / TRUTH_DIR).exists():
        shutil.rmtree(out / TRUTH_DIR)


def default_sizes(users: int) -> dict[str, int]:
    """Catalog sizes that scale with the number of users (about 0.5 skus and 1 url per user)."""
    n_items = int(np.clip(users // 2, 300, 500_000))
    n_cat = int(np.clip(n_items // 30, 12, 5_000))
    n_urls = int(np.clip(users, 500, 2_000_000))
    return {"skus": n_items, "categories": n_cat, "urls": n_urls}


EVENTS_PER_USER_DAY = 1.1  # measured: about 66 events per user over 60 days with the defaults


def users_for_events(events: int, days: int = 60) -> int:
    """How many users give about `events` events over `days` days (for benchmarks)."""
    return max(1, int(round(events / (EVENTS_PER_USER_DAY * days))))


def generate_demo_data(
    out: str | Path,
    users: int = 3000,
    days: int = 60,
    seed: int = 7,
    end: date | datetime | str | None = None,
    bad_row_rate: float = 0.0,
    timestamp_form: str = "string",
    chunk_users: int = 20_000,
    skus: int | None = None,
    categories: int | None = None,
    urls: int | None = None,
    progress: bool = False,
    coherent_segments: bool = False,
    rates: str | Rates = "demo",
    events_per_user: float | None = None,
    record_run: bool = False,
) -> dict[str, Any]:
    """Write a raw directory (RecSys 2025 layout) plus `_truth/`; returns row counts per file and the sizes.

    `end` is the last day of the period (default 2025-06-30); every event lies in
    [end + 1 day - days, end + 1 day). Deterministic for the same arguments (chunk_users included).
    `coherent_segments`: segments shop related departments (content predicts behaviour; see `_build_segments`).
    `rates`: what a session holds (`Rates`, or a name in `RATES`: "demo", or "challenge" for the real data's
    proportions of event types). `events_per_user`: scale every user's session rate so that users average about
    this many events (default: the demo's unscaled rates). `record_run`: also write wall time, peak RSS and bytes
    on disk into `_truth/meta.json` (under "run"; the only part that differs between identical runs).
    Memory: O(users + items) arrays plus one chunk of `chunk_users` users' events; see `SCALES` for the
    challenge-sized preset.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    t0 = time.perf_counter()
    if users < 1 or days < 3:
        raise ValueError("need users >= 1 and days >= 3")
    if timestamp_form not in ("string", "timestamp"):
        raise ValueError("timestamp_form must be 'string' or 'timestamp'")
    if not 0.0 <= bad_row_rate < 0.5:
        raise ValueError("bad_row_rate must be in [0, 0.5)")
    if chunk_users < 1:
        raise ValueError("chunk_users must be >= 1")
    if isinstance(rates, str):
        if rates not in RATES:
            raise ValueError(f"rates must be a Rates or one of {sorted(RATES)}, got {rates!r}")
        rates_name, rates = rates, RATES[rates]
    else:
        rates_name = "custom"
    if events_per_user is not None and events_per_user <= 0:
        raise ValueError("events_per_user must be > 0")
    if end is None:
        end = DEFAULT_END
    if isinstance(end, str):
        end = date.fromisoformat(end)
    if isinstance(end, datetime):
        end = end.date()
    end_ts = datetime(end.year, end.month, end.day, tzinfo=UTC) + timedelta(days=1)
    start_ts = end_ts - timedelta(days=days)
    start_epoch = int(start_ts.timestamp())
    period_s = days * 86400
    sizes = default_sizes(users)
    n_items = skus or sizes["skus"]
    n_cat = min(categories or sizes["categories"], n_items // 3)
    n_urls = urls or sizes["urls"]
    if n_cat < 1:
        raise ValueError("need at least 3 skus")

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _clean_outputs(out)
    truth = out / TRUTH_DIR
    truth.mkdir()  # marks the directory as ours at once, so a rerun after a crash may clean it up
    (truth / "meta.json").write_text(json.dumps({"status": "incomplete"}) + "\n")

    rng = np.random.default_rng([seed, 0])
    cat = _build_catalog(rng, n_items, n_cat, n_urls, period_s)
    seg_probs, seg_cdf, price_centre = _build_segments(rng, n_cat, coherent_segments)
    us = _build_users(rng, users, n_cat, period_s, seg_probs, price_centre)
    if events_per_user is not None:
        us.rate = us.rate * _session_scale(us, rates, events_per_user)
    w, cum = _intensity(start_ts, days)

    rows = {stem: 0 for stem in EVENT_TYPES}
    injected: dict[str, dict[str, int]] = {stem: {} for stem in EVENT_TYPES}
    duplicates = {stem: 0 for stem in EVENT_TYPES}
    parts = {stem: 0 for stem in EVENT_TYPES}
    first_seen = np.full(len(cat.sku), np.iinfo(np.int64).max)
    n_events = np.zeros(users, np.int64)
    last_event = np.full(users, -1, np.int64)
    for stem in EVENT_TYPES:
        (out / stem).mkdir()

    n_chunks = (users + chunk_users - 1) // chunk_users
    from ubp.log import log as progress_log
    from ubp.log import progress_enabled

    progress = progress and progress_enabled()
    t_events = t_chunk = time.perf_counter()
    # one log line per written chunk (a part per event type), on a terminal too
    for c in range(n_chunks):
        lo, hi = c * chunk_users, min(users, (c + 1) * chunk_users)
        crng = np.random.default_rng([seed, 1, c])
        evs = _simulate_chunk(crng, us, lo, hi, cat, seg_cdf, w, cum, period_s, rates)
        chunk_rows = 0
        for stem in EVENT_TYPES:
            ev = evs[stem]
            n_events[lo:hi] += np.bincount(ev["u"] - lo, minlength=hi - lo)
            if len(ev["u"]):
                np.maximum.at(last_event, ev["u"], ev["t"])
            if stem in ("product_buy", "add_to_cart", "remove_from_cart") and len(ev["v"]):
                np.minimum.at(first_seen, ev["v"], ev["t"])
            table = _event_table(stem, ev, us, cat, start_epoch, timestamp_form)
            good = table.num_rows
            if bad_row_rate > 0 and good > 0:
                brng = np.random.default_rng([seed, 2, c, EVENT_TYPES.index(stem)])
                n_bad = int(brng.binomial(good, bad_row_rate))
                n_dup = int(brng.binomial(good, bad_row_rate))
                extra = [table]
                if n_bad:
                    extra.append(_bad_rows(brng, stem, table, n_bad, timestamp_form, injected[stem]))
                if n_dup:
                    extra.append(table.take(pa.array(brng.integers(0, good, n_dup))))
                    duplicates[stem] += n_dup
                table = pa.concat_tables(extra)
            if table.num_rows:
                pq.write_table(table, out / stem / f"part-{parts[stem]:05d}.parquet")
                parts[stem] += 1
                rows[stem] += table.num_rows
                chunk_rows += table.num_rows
            del table
        del evs
        if progress:
            now = time.perf_counter()
            total_ev = sum(rows.values())
            progress_log.info(
                "generating events: %d/%d (%.0f%%) in %.0fs, %s events (%s events/s); this part: users %s-%s, "
                "%s events in %.1f s (%s events/s); peak RSS %.2f GB", c + 1, n_chunks, 100 * (c + 1) / n_chunks,
                now - t_events, f"{total_ev:,}", f"{total_ev / max(now - t_events, 1e-9):,.0f}", f"{lo:,}",
                f"{hi - 1:,}", f"{chunk_rows:,}", now - t_chunk, f"{chunk_rows / max(now - t_chunk, 1e-9):,.0f}",
                peak_rss_bytes() / 1e9)
            t_chunk = now
    for stem in EVENT_TYPES:  # an event type with no rows at all still gets one empty part with its schema
        if parts[stem] == 0:
            pq.write_table(_event_schema(stem, timestamp_form).empty_table(), out / stem / "part-00000.parquet")
            parts[stem] = 1

    # catalog, written by row groups of CATALOG_BLOCK items (one when it fits: the demo's files as before)
    bad_products = 0
    bad = None
    if bad_row_rate > 0:
        bad_products = max(1, int(round(bad_row_rate * len(cat.sku))))
        base = int(cat.sku.max()) + 1
        bad = pa.table({
            "sku": pa.array([base + i for i in range(bad_products)], pa.int64()),
            "category": pa.array([(-1 if i % 2 == 0 else int(cat.category_ids[0])) for i in range(bad_products)],
                                 pa.int64()),
            "price": pa.array([(150 if i % 2 else 10) for i in range(bad_products)], pa.int32()),
            "name": pa.array(["[1 2 3]"] * bad_products, pa.string()),
        })
    n_sku = len(cat.sku)
    blocks = [(b, min(n_sku, b + CATALOG_BLOCK)) for b in range(0, n_sku, CATALOG_BLOCK)]
    prod_writer = text_writer = None
    try:
        for b_lo, b_hi in blocks:
            prod = pa.table({
                "sku": pa.array(cat.sku[b_lo:b_hi], pa.int64()),
                "category": pa.array(cat.category_ids[cat.item_cat[b_lo:b_hi]], pa.int64()),
                "price": pa.array(cat.price[b_lo:b_hi], pa.int32()),
                "name": _code_strings(cat.name_codes[b_lo:b_hi]),
            })
            if bad is not None and b_hi == n_sku:
                prod = pa.concat_tables([prod, bad])
            assert tuple(prod.column_names) == RAW_PRODUCT_COLUMNS
            text = pa.table({"sku": pa.array(cat.sku[b_lo:b_hi], pa.int64()),
                             "text": pa.array(_catalog_text(cat, b_lo, b_hi), pa.string())})
            assert tuple(text.column_names) == RAW_PRODUCT_TEXT_COLUMNS
            if prod_writer is None:
                prod_writer = pq.ParquetWriter(out / f"{RAW_PRODUCT_FILE}.parquet", prod.schema)
                text_writer = pq.ParquetWriter(out / f"{RAW_PRODUCT_TEXT_FILE}.parquet", text.schema)
            prod_writer.write_table(prod)
            text_writer.write_table(text)
            del prod, text
    finally:
        for writer in (prod_writer, text_writer):
            if writer is not None:
                writer.close()

    # planted truth
    ts_us = pa.timestamp("us", tz="UTC")

    def to_ts(sec: np.ndarray, valid: np.ndarray):
        return pa.array(((start_epoch + sec) * 1_000_000).astype(np.int64), pa.int64(),
                        mask=~valid).cast(ts_us)

    pq.write_table(pa.table({
        "client_id": pa.array(us.client_id, pa.int64()),
        "segment": pa.array(us.segment, pa.int32()),
        "churned": pa.array(us.churned),
        "churn_ts": to_ts(us.stop_s, us.churned),
        "join_ts": to_ts(us.join_s, np.ones(users, bool)),
        "last_event_ts": to_ts(last_event, last_event >= 0),
        "n_events": pa.array(n_events, pa.int64()),
        "price_pref": pa.array(us.price_pref.astype(np.float32)),
        "sessions_per_day": pa.array(us.rate.astype(np.float32)),
    }), truth / "users.parquet")
    seen = first_seen < np.iinfo(np.int64).max
    pq.write_table(pa.table({
        "sku": pa.array(cat.sku, pa.int64()),
        "category": pa.array(cat.category_ids[cat.item_cat], pa.int64()),
        "price": pa.array(cat.price, pa.int32()),
        "is_new": pa.array(cat.is_new),
        "release_ts": to_ts(cat.release_s, np.ones(len(cat.sku), bool)),
        "first_seen_ts": to_ts(np.where(seen, first_seen, 0), seen),
    }), truth / "items.parquet")
    pq.write_table(pa.table({
        "segment": pa.array(np.repeat(np.arange(N_SEGMENTS), n_cat), pa.int32()),
        "category": pa.array(np.tile(cat.category_ids, N_SEGMENTS), pa.int64()),
        "prob": pa.array(seg_probs.ravel()),
    }), truth / "segment_categories.parquet")

    rows[RAW_PRODUCT_FILE] = n_sku + bad_products
    rows[RAW_PRODUCT_TEXT_FILE] = n_sku
    meta = {
        "status": "complete",
        "args": {"users": users, "days": days, "seed": seed, "end": end.isoformat(), "bad_row_rate": bad_row_rate,
                 "timestamp_form": timestamp_form, "chunk_users": chunk_users, "skus": n_items,
                 "categories": n_cat, "urls": n_urls, **({"coherent_segments": True} if coherent_segments else {}),
                 **({"rates": rates_name} if rates_name != "demo" else {}),
                 **({"events_per_user": events_per_user} if events_per_user is not None else {})},
        "start": start_ts.strftime("%Y-%m-%d %H:%M:%S"),
        "end": end_ts.strftime("%Y-%m-%d %H:%M:%S"),
        "end_is_exclusive": True,
        "suggested_as_of": (end_ts - timedelta(days=14)).strftime("%Y-%m-%d %H:%M:%S"),
        "new_items_from": (start_ts + timedelta(seconds=int(NEW_ITEM_FROM * period_s))).strftime(
            "%Y-%m-%d %H:%M:%S"),
        "rows": rows,
        "parts": parts,
        "injected_bad_rows": {k: v for k, v in injected.items() if v},
        "injected_bad_products": bad_products,
        "injected_duplicates": {k: v for k, v in duplicates.items() if v},
        "users": users,
        "users_with_events": int((n_events > 0).sum()),
        "churners": int(us.churned.sum()),
        "segments": N_SEGMENTS,
        "skus": len(cat.sku),
        "new_skus": int(cat.is_new.sum()),
        "categories": n_cat,
        "urls": len(cat.url_ids),
    }
    n_total = sum(rows[stem] for stem in EVENT_TYPES)
    seconds = time.perf_counter() - t0
    run = {"seconds": round(seconds, 3), "events": n_total, "events_per_s": round(n_total / max(seconds, 1e-9)),
           "peak_rss_bytes": peak_rss_bytes(), "bytes_on_disk": _bytes_on_disk(out)}
    if record_run:  # wall time and memory differ between identical runs: only when asked for
        meta["run"] = run
    (truth / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if progress:
        progress_log.info(
            "demo-data: %s events, %s users, %s skus in %.1f s (%s events/s), peak RSS %.2f GB, %.2f GB on disk",
            f"{n_total:,}", f"{users:,}", f"{len(cat.sku):,}", seconds, f"{run['events_per_s']:,}",
            run["peak_rss_bytes"] / 1e9, sum(run["bytes_on_disk"].values()) / 1e9)
    result = {"stage": "demo-data", "out": str(out), **meta, "seconds": round(seconds, 3),
              **{k: v for k, v in run.items() if k != "seconds"}}
    return result


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (`getrusage`; Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _bytes_on_disk(out: Path) -> dict[str, int]:
    """Bytes of the generator's files: event parts, catalog files, planted truth."""
    def size(paths) -> int:
        return sum(p.stat().st_size for p in paths if p.is_file())

    return {"events": size(p for stem in EVENT_TYPES for p in (out / stem).rglob("*")),
            "catalog": size(out / f"{s}.parquet" for s in (RAW_PRODUCT_FILE, RAW_PRODUCT_TEXT_FILE)),
            "truth": size((out / TRUTH_DIR).rglob("*"))}


def _session_scale(users: _Users, rates: Rates, events_per_user: float) -> float:
    """Factor on every user's session rate that gives about `events_per_user` events per user on average: the
    expected sessions of a user are rate x active days, less the churners' fade (sessions in the last
    CHURN_FADE_DAYS kept with probability 0.2 + 0.8 x days-left share: 60% on average)."""
    active_days = (users.stop_s - users.join_s) / 86400.0
    fade_loss = np.where(users.churned, 0.4 * np.minimum(active_days, CHURN_FADE_DAYS), 0.0)
    sessions = float(np.mean(users.rate * np.maximum(active_days - fade_loss, 0.0)))
    per_session = sum(rates.per_session().values())
    return events_per_user / (per_session * max(sessions, 1e-12))
