"""The Feast feature repo of ubp (layout like feast-workshop).

`entities.py`, `data_sources.py`, `features.py` and `feature_services.py` hold the definitions; `feature_store.yaml`
is the template that `ubp.feast_store` renders into `<lakehouse>/_feast/feature_store.yaml` (the Delta jars and
absolute paths are only known at run time). See `ubp/feast_store.py` and README "Feature store (Feast)".
"""
