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

    @classmethod
    def of(cls, fv: Any) -> ViewLayout:
        src = fv.batch_source
        join_keys = list(fv.join_keys)
        if len(join_keys) != 1:
            raise UbpError(f"feature view {fv.name!r}: the fast publish path supports one int64 join key")
        return cls(
            name=fv.name,
            path=str(src.path),
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
                           [(f, int(t.value)) for f, t in self.features]])
        return hashlib.sha1(spec.encode()).hexdigest()[:16]
