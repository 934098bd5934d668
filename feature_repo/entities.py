"""Entities: the join keys downstream models look features up by."""

from feast import Entity, ValueType

user = Entity(
    name="user",
    join_keys=["client_id"],
    value_type=ValueType.INT64,
    description="A user of the shop (client_id from the event log).",
)

item = Entity(
    name="item",
    join_keys=["sku"],
    value_type=ValueType.INT64,
    description="A catalog item (sku), cold items included.",
)
