"""The table contracts (`ubp/tables.py`): owners, layers, unique columns, Arrow and Spark schemas, event codes."""

from __future__ import annotations

import pyarrow as pa

from ubp.tables import EVENT_TYPE_CODE, TABLES, USER_SEQUENCES


def test_every_table_has_owner_layer_and_unique_columns():
    for table in TABLES.values():
        assert table.layer in {"bronze", "silver", "gold", "ops"}
        assert table.owner
        assert len(set(table.column_names)) == len(table.column_names), table.name


def test_schema_converts_to_arrow_and_spark(spark):
    schema = USER_SEQUENCES.arrow_schema()
    assert schema.field("query").type == pa.list_(pa.int32())
    assert schema.field("ts").type == pa.list_(pa.int64())
    spark_schema = USER_SEQUENCES.spark_schema()
    assert spark_schema["sku_raw"].dataType.simpleString() == "array<bigint>"


def test_event_codes_follow_the_challenge():
    assert EVENT_TYPE_CODE == {"add_to_cart": 0, "remove_from_cart": 1, "product_buy": 2, "page_visit": 3,
                               "search_query": 4}


