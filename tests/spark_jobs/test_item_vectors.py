"""Gold item vectors from content and a model (`spark_jobs/item_vectors.py`), on the Spark executors: every content
row gets transform(raw content) + its trained offset, a cold item (no offset) its content vector alone, and the
offsets travel through the small Arrow-built frame unchanged."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from ubp.models.content_prep import ContentTransform
from ubp.spark_jobs.item_vectors import item_vectors_df, offsets_frame

from ubp.tables import ITEM_CONTENT, ITEM_VECTORS

AS_OF, CREATED = datetime(2024, 3, 1, tzinfo=UTC), datetime(2024, 3, 2, tzinfo=UTC)


def test_vectors_are_content_plus_offset_and_cold_items_get_content_only(spark):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(6, 12)).astype(np.float32)
    transform = ContentTransform.fit(raw[:4], 4)  # fitted on the warm items 10..13
    skus = np.arange(10, 16)
    offset = (0.1 * rng.normal(size=(4, 4))).astype(np.float32)
    offsets = offsets_frame(spark, skus[:4], offset)
    back = {r["sku"]: r["offset"] for r in offsets.collect()}
    assert sorted(back) == [10, 11, 12, 13]
    np.testing.assert_allclose(back[12], offset[2], rtol=1e-6)

    content = spark.createDataFrame(
        [(int(s), "h", "minilm", "text", raw[i].tolist(), CREATED) for i, s in enumerate(skus)],
        ITEM_CONTENT.spark_schema())
    df = item_vectors_df(content, offsets, transform, "item-v1", AS_OF, CREATED)
    assert df.columns == ITEM_VECTORS.column_names
    rows = {r["sku"]: r for r in df.collect()}
    assert sorted(rows) == skus.tolist()
    expected = transform.transform(raw)
    for i, s in enumerate(skus):
        r = rows[int(s)]
        assert r["is_cold"] == (i >= 4) and r["model_version"] == "item-v1" and r["encoder"] == "minilm"
        # (Spark hands timestamps back as naive local times: compare the instants)
        assert (r["as_of"].timestamp(), r["created_at"].timestamp()) == (AS_OF.timestamp(), CREATED.timestamp())
        want = expected[i] + (offset[i] if i < 4 else 0.0)
        np.testing.assert_allclose(r["vector"], want, rtol=1e-5, atol=1e-6)
    cold = np.array(rows[15]["vector"])
    assert abs(np.linalg.norm(cold) - 1.0) < 1e-5  # the content part is a unit vector
