"""Fast publish: stream a gold Delta table into Feast's online store, byte for byte what Feast itself would write.

Feast's own `materialize` / `write_to_online_store` build one protobuf object per value and one Python tuple per row
(5-15k rows/s for 128-float vectors here). This path writes the same bytes without them:

- the Delta table is read through its log (`deltalake`: the current snapshot only, deleted rows are gone) in Arrow
  batches;
- entity keys (`serialize_entity_key` v3 of one int64 join key), float vectors (`Value.float_list_val`) and int64s
  (`Value.int64_val`) are serialised with numpy over whole columns; low-cardinality columns (strings, bools,
  timestamps) go through Feast's own `python_values_to_proto_values` once per distinct value;
- SQLite gets Feast's own upsert as ONE `INSERT ... SELECT` statement per batch (the batch bound as a few blobs,
  see `SqliteWriter`); Redis gets raw RESP `HSET` commands (the hash layout
  of Feast's Redis store: key = entity key + project, fields = murmur3 of `view:feature` plus `_ts:view`), packed
  per column and pipelined in chunks while redis-server works (see `RedisWriter`).

Incremental: the publish state (per online store and view: the published (key, as_of, created_at) of each entity and
the Delta version) lives in `<lakehouse>/_feast/published/`. A publish computes, per entity, the row Feast would
serve (latest as_of, then latest created_at, over the current Delta snapshot), writes only entities whose row is new
or changed (a newer as-of, a rewrite) and deletes entities that are no longer in the table, so a row deleted from
Delta is not served. Afterwards the interval is recorded in Feast's registry with `apply_materialization`, exactly as
`materialize_incremental` does. Before writing, the state marks the entities it is about to touch as in doubt
(`PublishedState.touching`), so a publish killed halfway is followed by one that writes or deletes them again.

Atomic switch: `publish_view` writes the view it is given. The stage (`ubp/stages/publish.py`) gives it the slot view
that is not served and then switches the feature services over in one registry write (`ubp/feast_slots.py`), so a
reader sees all-old or all-new data.

Modules: `delta` (the Delta read), `encoding` (Feast's bytes), `layout` (`ViewLayout`), `sqlite` (`SqliteWriter`),
`redis` (`RedisWriter`, `redis_client`), `state` (`PublishedState`, the per-entity diff), `incremental`
(`publish_view`). This package re-exports their public names, the API that the stage `ubp/stages/publish.py` uses.
"""

from __future__ import annotations

from ubp.publish.delta import delta_version, scan_delta
from ubp.publish.encoding import (
    encode_column,
    encode_entity_keys,
    encode_float_lists,
    entity_key_prefix,
    float_list_matrix,
    redis_ts,
    sqlite_ts,
)
from ubp.publish.incremental import (
    PublishResult,
    current_state,
    publish_view,
    record_materialization,
    state_file,
)
from ubp.publish.layout import ViewLayout
from ubp.publish.redis import RedisWriter, redis_client
from ubp.publish.sqlite import Slots, SqliteWriter, encode_slots
from ubp.publish.state import PublishedState, diff_state, latest_per_key
from ubp.publish.versions import TESTED_VERSIONS, installed_version, private_api_ok, require_private_api

__all__ = [
    "TESTED_VERSIONS",
    "PublishResult",
    "PublishedState",
    "RedisWriter",
    "Slots",
    "SqliteWriter",
    "ViewLayout",
    "current_state",
    "delta_version",
    "diff_state",
    "encode_column",
    "encode_entity_keys",
    "encode_float_lists",
    "encode_slots",
    "entity_key_prefix",
    "float_list_matrix",
    "installed_version",
    "private_api_ok",
    "latest_per_key",
    "publish_view",
    "record_materialization",
    "redis_client",
    "redis_ts",
    "require_private_api",
    "scan_delta",
    "sqlite_ts",
    "state_file",
]
