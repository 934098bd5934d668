"""The text member's pooling (`spark_jobs/text_profile.py`) on hand-checked means: newest-first distinct skus, the
`recent` cut, only text-source items pooled, users without text content left out, the contract's columns, and a
version that follows the encoder and the item content."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pytest
from ubp.spark_jobs.text_profile import content_fingerprint, recent_skus, text_version, user_text

from ubp.tables import ITEM_CONTENT, USER_TEXT

AS_OF = datetime(2024, 3, 1)
SEQUENCES = [  # (client_id, n_events, sku_raw chronological; -1 = an event without a sku)
    (1, 9, [6, 5, -1, 6, 5, 7, -1, 8]),  # newest first, distinct: 8, 7, 5, 6
    (2, 2, [7, -1]),  # only a name-code item: no row
    (3, 1, [-1]),  # no product event: no row
    (4, 1, [9]),  # a sku without content: no row
    (5, 3, [6, 6, 6]),  # one item three times
    (6, 4, [9, 6, 9, 5]),  # newest first: 5, 9, 6; 9 has no content
]
CONTENT = [  # (sku, source, embedding)
    (5, "text", [1.0, 0.0, 0.0]),
    (6, "text", [0.0, 1.0, 0.0]),
    (7, "name_codes", [0.0, 0.0, 1.0]),
    (8, "text", [0.0, 0.0, 3.0]),
]


def _content(spark, rows=CONTENT, encoder="minilm"):
    return spark.createDataFrame(
        [(sku, f"h{sku}", encoder if src == "text" else "codes", src, emb, AS_OF) for sku, src, emb in rows],
        ITEM_CONTENT.spark_schema())


@pytest.fixture(scope="module")
def frames(spark):
    seqs = spark.createDataFrame(SEQUENCES, "client_id bigint, n_events bigint, sku_raw array<bigint>")
    return seqs, _content(spark)


def test_recent_skus_are_distinct_newest_first_and_cut(frames):
    seqs, _ = frames
    full = {r["client_id"]: r["skus"] for r in recent_skus(seqs, recent=20).collect()}
    assert full[1] == [8, 7, 5, 6] and full[5] == [6] and full[6] == [5, 9, 6] and full[3] == []
    cut = {r["client_id"]: r["skus"] for r in recent_skus(seqs, recent=3).collect()}
    assert cut[1] == [8, 7, 5] and cut[6] == [5, 9, 6]


def test_text_items_of_the_recent_cut_are_mean_pooled(frames):
    seqs, content = frames
    df = user_text(seqs, content, AS_OF, "text-test", recent=3)
    assert [(f.name, f.dataType) for f in df.schema] == [(f.name, f.dataType) for f in USER_TEXT.spark_schema()]
    rows = {r["client_id"]: r for r in df.collect()}
    assert sorted(rows) == [1, 5, 6]  # 2: name codes only, 3: no sku, 4: no content
    u1 = rows[1]  # recent 3: skus 8, 7, 5; 7 is a name-code item; 6 is past the cut
    np.testing.assert_allclose(u1["embedding"], [0.5, 0.0, 1.5])  # mean of 8 and 5
    assert (u1["n_items"], u1["text_share"], u1["n_events"]) == (2, pytest.approx(2 / 3), 9)
    assert rows[5]["embedding"] == [0.0, 1.0, 0.0] and (rows[5]["n_items"], rows[5]["text_share"]) == (1, 1.0)
    np.testing.assert_allclose(rows[6]["embedding"], [0.5, 0.5, 0.0])  # 5 and 6; 9 has no content
    assert rows[6]["text_share"] == pytest.approx(2 / 3)
    assert {r["encoder"] for r in rows.values()} == {"minilm"} and {r["model_version"] for r in rows.values()} == {
        "text-test"}
    assert {r["as_of"] for r in rows.values()} == {AS_OF}
    wide = {r["client_id"]: r for r in user_text(seqs, content, AS_OF, "text-test", recent=20).collect()}
    np.testing.assert_allclose(wide[1]["embedding"], [1 / 3, 1 / 3, 1.0])  # 8, 5 and 6 within the cut of 20


def test_version_follows_the_encoder_and_the_text_items(spark, frames):
    _, content = frames
    base = content_fingerprint(content)
    assert base["items"] == 3 and base["encoders"] == ["minilm"]
    reordered = _content(spark, CONTENT[::-1])
    assert text_version(content_fingerprint(reordered)) == text_version(base)
    codes_changed = _content(spark, [*CONTENT[:2], (7, "name_codes", [1.0, 1.0, 1.0]), CONTENT[3]])
    assert text_version(content_fingerprint(codes_changed)) == text_version(base)  # not pooled: same version
    assert text_version(content_fingerprint(_content(spark, encoder="other"))) != text_version(base)
    assert text_version(content_fingerprint(_content(spark, CONTENT[:2]))) != text_version(base)
    assert text_version(base, recent=10) != text_version(base) and text_version(base).startswith("text-r20-")
