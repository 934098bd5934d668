"""A feature view's publish layout (`ubp/publish/layout.py`), read from a Feast view: the Delta path (the source's,
or the `delta_path` tag of a space's filtering source), the vector space's row filter, the columns to read, and a
fingerprint that changes with anything that changes the published bytes. No Feast store needed."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
import pytest
from feast.value_type import ValueType

from ubp.errors import UbpError
from ubp.publish.layout import ViewLayout


def _fv(name="user_profile_v1", path="/lake/gold/user_profiles", join_keys=("client_id",), created="created_at",
        tags=None, features=(("embedding", ValueType.FLOAT_LIST), ("model_version", ValueType.STRING))):
    feats = [SimpleNamespace(name=f, dtype=SimpleNamespace(to_value_type=lambda t=t: t)) for f, t in features]
    source = SimpleNamespace(path=path, timestamp_field="as_of", created_timestamp_column=created)
    return SimpleNamespace(name=name, batch_source=source, join_keys=list(join_keys), tags=tags, features=feats)


def test_layout_of_a_plain_view():
    view = ViewLayout.of(_fv())
    assert (view.name, view.path, view.join_key, view.timestamp_field, view.created_field, view.where) == (
        "user_profile_v1", "/lake/gold/user_profiles", "client_id", "as_of", "created_at", ())
    assert view.features == (("embedding", ValueType.FLOAT_LIST), ("model_version", ValueType.STRING))
    assert view.columns == ["client_id", "as_of", "created_at", "embedding", "model_version"]
    assert ViewLayout.of(_fv(created="")).created_field is None
    assert view.row_filter() is None and view.row_mask(pa.table({"x": [1]})) is None  # every row


def test_a_space_view_reads_its_table_through_the_tags_and_keeps_its_rows():
    view = ViewLayout.of(_fv(path=None, tags={"delta_path": "/lake/gold/user_member_profiles",
                                              "space_id": "user_profile_week_all_v1"}))
    assert view.path == "/lake/gold/user_member_profiles"
    assert view.where == (("space_id", "user_profile_week_all_v1"),)
    batch = pa.table({"client_id": [1, 2, 3], "space_id": ["user_profile_week_all_v1", "user_profile_all_fields_v1",
                                                           "user_profile_week_all_v1"]})
    assert view.row_mask(batch).tolist() == [True, False, True]
    assert batch.filter(view.row_filter()).column("client_id").to_pylist() == [1, 3]
    both = ViewLayout(**{**view.__dict__, "where": (("space_id", "user_profile_week_all_v1"), ("client_id", 3))})
    assert both.row_mask(batch).tolist() == [False, False, True]  # every condition holds
    assert batch.filter(both.row_filter()).column("client_id").to_pylist() == [3]


def test_views_the_fast_path_cannot_publish_are_refused():
    with pytest.raises(UbpError, match="supports one int64 join key"):
        ViewLayout.of(_fv(join_keys=("client_id", "sku")))
    with pytest.raises(UbpError, match=r"no Delta path \(source path or tag `delta_path`\)"):
        ViewLayout.of(_fv(path=None, tags={"space_id": "x"}))


def test_fingerprint_follows_what_is_published():
    base = ViewLayout.of(_fv())
    assert base.fingerprint() == ViewLayout.of(_fv()).fingerprint() and len(base.fingerprint()) == 16
    changed = [ViewLayout.of(_fv(path="/other")), ViewLayout.of(_fv(created=None)),
               ViewLayout.of(_fv(features=(("embedding", ValueType.FLOAT_LIST),))),
               ViewLayout.of(_fv(features=(("embedding", ValueType.DOUBLE_LIST), ("model_version", ValueType.STRING)))),
               ViewLayout.of(_fv(tags={"space_id": "user_profile_v2"}))]
    prints = {v.fingerprint() for v in changed}
    assert len(prints) == len(changed) and base.fingerprint() not in prints
