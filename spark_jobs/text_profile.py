"""The text member `text` (gold `user_text`): the mean content embedding of the items a user touched last.

Per user: the `recent` (20) most recent distinct skus of the user's product events in silver `user_sequences`
(`sku_raw`, newest first), joined to their raw content embedding in silver `item_content` (all-MiniLM-L6-v2 on the
product text, 384-d) and mean-pooled. Everything runs in Spark: the skus are cut per row (no shuffle), exploded,
joined to the catalog and pooled per user from at most `recent` vectors, so memory per user is bounded and no
user reaches the driver. The ensemble reduces the block with PCA (recipe `[members.text]`).

Only `source = "text"` items are pooled. `item_content` also holds, for items without text, a fixed random
projection of the 16 name codes (`source = "name_codes"`): another space, whose mean with text vectors would mean
nothing, and whose information the `gru_sku_text` and `items` members already carry. A user whose recent skus have
no text gets no row (the ensemble fills the member's mean and flags it in `has_text`); on a catalog without any
text the member has no rows and the ensemble skips it. Search queries are not encoded: the data has only their
quantised codes, no text.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from ubp.tables import USER_TEXT

RECENT = 20
SOURCES: tuple[str, ...] = ("text",)


def recent_skus(sequences: DataFrame, recent: int = RECENT) -> DataFrame:
    """`user_sequences` rows -> (client_id, n_events, skus): the user's `recent` most recent distinct skus, newest
    first. Per row with array functions (`array_distinct` keeps first occurrences, so the reversed sequence gives
    each sku at its newest event): no shuffle."""
    newest_first = F.filter(F.reverse(F.col("sku_raw")), lambda s: s >= 0)  # -1: the event has no sku
    return sequences.select("client_id", "n_events",
                            F.slice(F.array_distinct(newest_first), 1, recent).alias("skus"))


def _mean(vectors: Column, n: Column) -> Column:
    """Element-wise mean of an array of equal-length float arrays, accumulated in double."""
    zero = F.array_repeat(F.lit(0.0).cast("double"), F.size(F.element_at(vectors, 1)))
    total = F.aggregate(vectors, zero, lambda acc, v: F.zip_with(acc, v, lambda a, b: a + b))
    return F.transform(total, lambda x: (x / n).cast("float"))


def pool(recent: DataFrame, content: DataFrame, sources: Sequence[str] = SOURCES) -> DataFrame:
    """`recent_skus` rows + `item_content` -> (client_id, n_events, embedding, n_items, text_share, encoder).

    `embedding` is the mean of the embeddings of the user's recent skus whose item_content source is in `sources`
    (summed in sku order, so a rebuild gives the same floats); `n_items` how many were pooled; `text_share` the
    share of the user's recent skus whose content is text (pooled text items / recent distinct skus). Users with no
    such sku get no row."""
    items = content.where(F.col("source").isin(*sources)).select("sku", "embedding", "source", "encoder")
    exploded = recent.select("client_id", "n_events", F.size("skus").alias("n_recent"),
                             F.explode("skus").alias("sku"))
    per_user = exploded.join(items, "sku").groupBy("client_id", "n_events", "n_recent").agg(
        F.array_sort(F.collect_list(F.struct("sku", "embedding"))).alias("items"),
        F.count(F.lit(1)).alias("n_items"),
        F.count(F.when(F.col("source") == "text", 1)).alias("n_text"),
        F.array_join(F.array_sort(F.collect_set("encoder")), ",").alias("encoder"),
    )
    vectors = F.transform("items", lambda s: s["embedding"])
    return per_user.select(
        "client_id", "n_events",
        _mean(vectors, F.col("n_items")).alias("embedding"),
        F.col("n_items").cast("int").alias("n_items"),
        (F.col("n_text") / F.col("n_recent")).cast("float").alias("text_share"),
        "encoder",
    )


def content_fingerprint(content: DataFrame, sources: Sequence[str] = SOURCES) -> dict:
    """What the pooled vectors depend on in `item_content`: the encoders, the number of items and an
    order-independent hash of their (sku, text_hash, encoder) keys. One aggregate over the key columns."""
    row = content.where(F.col("source").isin(*sources)).agg(
        F.count(F.lit(1)).alias("items"),
        F.bit_xor(F.xxhash64("sku", "text_hash", "encoder")).alias("keys"),
        F.array_sort(F.collect_set("encoder")).alias("encoders"),
    ).first()
    return {"items": int(row["items"]), "keys": int(row["keys"] or 0), "encoders": list(row["encoders"] or [])}


def text_version(fingerprint: dict, recent: int = RECENT, sources: Sequence[str] = SOURCES) -> str:
    """`text-r<recent>-<hash>`: a rebuild with another encoder, cut, pooled sources or item content is a new
    version (so it is never mistaken for the old rows)."""
    payload = json.dumps({"content": fingerprint, "recent": recent, "sources": sorted(sources)}, sort_keys=True)
    return f"text-r{recent}-{hashlib.sha1(payload.encode()).hexdigest()[:12]}"


def user_text(sequences: DataFrame, content: DataFrame, as_of: datetime, version: str, recent: int = RECENT,
              sources: Sequence[str] = SOURCES) -> DataFrame:
    """`user_text` rows (the contract's columns and types) for the sequence rows given: a lazy DataFrame to write,
    not to collect."""
    rows = pool(recent_skus(sequences, recent), content, sources)
    values = {"as_of": F.lit(as_of).cast("timestamp"), "model_version": F.lit(version),
              "created_at": F.current_timestamp()}
    return rows.select(*[(values[c.name] if c.name in values else F.col(c.name)).cast(c.type).alias(c.name)
                         for c in USER_TEXT.columns])
