"""What to publish: a feature view's layout (table, join key, timestamps, features), read from the Feast object."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from ubp.errors import UbpError


@dataclass(frozen=True)
class ViewLayout:
    name: str
    path: str
    join_key: str
    timestamp_field: str
    created_field: str | None
    features: tuple[tuple[str, Any], ...]  # (name, feast ValueType)
    where: tuple[tuple[str, str], ...] = ()  # (column, value): the rows of one vector space (`space_id`)

    @classmethod
    def of(cls, fv: Any) -> ViewLayout:
        src = fv.batch_source
        join_keys = list(fv.join_keys)
        if len(join_keys) != 1:
            raise UbpError(f"feature view {fv.name!r}: the fast publish path supports one int64 join key")
        tags = dict(fv.tags or {})
        path = src.path or tags.get("delta_path")  # a space's source is a filtering query over the table
        if not path:
            raise UbpError(f"feature view {fv.name!r}: no Delta path (source path or tag `delta_path`)")
        return cls(
            name=fv.name,
            path=str(path),
            where=(("space_id", tags["space_id"]),) if tags.get("space_id") else (),
            join_key=join_keys[0],
            timestamp_field=src.timestamp_field,
            created_field=src.created_timestamp_column or None,
            features=tuple((f.name, f.dtype.to_value_type()) for f in fv.features),
        )

    @property
    def columns(self) -> list[str]:
        cols = [self.join_key, self.timestamp_field] + ([self.created_field] if self.created_field else [])
        return cols + [f for f, _ in self.features if f not in cols]

    def fingerprint(self) -> str:
        spec = json.dumps([self.name, self.path, self.join_key, self.timestamp_field, self.created_field,
                           [(f, int(t.value)) for f, t in self.features]] + ([list(self.where)] if self.where else []))
        return hashlib.sha1(spec.encode()).hexdigest()[:16]

    def row_filter(self) -> Any:
        """The pyarrow expression of `where` (None: every row)."""
        import pyarrow.compute as pc

        expr = None
        for col, value in self.where:
            term = pc.field(col) == value
            expr = term if expr is None else expr & term
        return expr

    def row_mask(self, batch: Any) -> Any:
        """Boolean numpy mask of the rows of `batch` that `where` keeps (None: all)."""
        import numpy as np

        mask = None
        for col, value in self.where:
            m = np.asarray(batch.column(col).to_numpy(zero_copy_only=False) == value)
            mask = m if mask is None else mask & m
        return mask
