"""What a downstream model does with ubp's feature store: online lookups and point-in-time training data.

    ubp --lakehouse lakehouse publish            # feast apply + fast publish (once per pipeline run)
    .venv/bin/python examples/read_profile.py --lakehouse lakehouse --client-id 1 --client-id 2

Online: `get_online_features` with a feature service: `user_profile_v1` (GRU-AE profile, the default) or
`--service user_profile_ensemble_v1` (ensemble profile). The name pins the vector space (see
feature_repo/feature_services.py): a model trained on one service must keep reading that service.
Offline: `get_historical_features` with an entity frame of (client_id, event_timestamp): each row gets the profile
that was valid at that time (the latest as-of <= event_timestamp), read from the Delta table through Spark, so a
churn/propensity model trains without leakage.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ubp.config import Settings
from ubp.feast_store import get_store


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lakehouse", default="lakehouse")
    ap.add_argument("--client-id", type=int, action="append", required=True)
    ap.add_argument("--online", default=None, help="sqlite (default) or redis")
    ap.add_argument("--service", default="user_profile_v1", choices=["user_profile_v1", "user_profile_ensemble_v1"])
    ap.add_argument("--training", action="store_true", help="also build point-in-time training rows (starts Spark)")
    args = ap.parse_args()

    store = get_store(Settings(lakehouse=Path(args.lakehouse)), args.online)

    # 1) online: what a model does at request time. Fetch the service per request (or at least once per registry
    # cache TTL): a publish switches it to the freshly written slot (docs/stages/publish.md#atomic-switch)
    service = store.get_feature_service(args.service)
    online = store.get_online_features(
        features=service, entity_rows=[{"client_id": c} for c in args.client_id]
    ).to_dict()
    for i, client in enumerate(online["client_id"]):
        emb = online["embedding"][i]
        if emb is None:
            print(f"client {client}: no profile published")
            continue
        x = np.asarray(emb, dtype=np.float32)  # the model's input vector
        print(f"client {client}: dim={x.size} |x|={np.linalg.norm(x):.3f} model={online['model_version'][i]} "
              f"as_of={online['as_of'][i]} n_events={online['n_events'][i]}")

    # 2) offline: point-in-time correct training data (labels would be joined on the same rows)
    if args.training:
        entity_df = pd.DataFrame({
            "client_id": args.client_id,
            "event_timestamp": [datetime.now(UTC)] * len(args.client_id),
        })
        training = store.get_historical_features(entity_df=entity_df, features=service).to_df()
        print(training[["client_id", "event_timestamp", "as_of", "model_version", "n_events"]])


if __name__ == "__main__":
    main()
