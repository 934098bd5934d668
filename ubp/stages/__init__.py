"""Stage functions: the ONE place each pipeline step is implemented for callers.

The CLI (`ubp/commands/*`), `ubp run` and the Airflow DAG tasks all call these; no logic lives only in a DAG or a
command. Each stage function takes a `Settings` first, imports heavy libraries inside, and returns a small
JSON-serialisable summary dict (at least `{"stage": name, "rows": {table: count, ...}}`).
"""
