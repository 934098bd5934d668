"""Tiny hand-made bronze tables in the contract schemas, for the targets / ensemble / evaluate tests."""

from __future__ import annotations

from datetime import datetime, timedelta

from ubp.tables import EVENTS, PRODUCTS


def event_rows(spec: list[tuple]) -> list[tuple]:
    """spec rows: (event_type, client_id, timestamp, sku, url) -> full EVENTS rows."""
    now = datetime(2030, 1, 1)
    rows = []
    for i, (etype, cid, ts, sku, url) in enumerate(spec):
        query = [1] * 16 if etype == "search_query" else None
        rows.append((i, etype, cid, ts, sku, url, query, "/raw/x.parquet", now, ts.date()))
    return rows


def events_df(spark, spec: list[tuple]):
    return spark.createDataFrame(event_rows(spec), EVENTS.spark_schema())


def products_df(spark, rows: list[tuple]):
    """rows: (sku, category, price)."""
    now = datetime(2030, 1, 1)
    return spark.createDataFrame([(s, c, p, [0] * 16, "/raw/p.parquet", now) for s, c, p in rows],
                                 PRODUCTS.spark_schema())


AS_OF = datetime(2025, 1, 15)


def day(d: float) -> datetime:
    """AS_OF + d days (negative = before the as-of)."""
    return AS_OF + timedelta(days=d)


def write_table(settings, table, rows: list[tuple]) -> None:
    """Write hand-made rows of a gold/silver contract table with delta-rs (no Spark job: keeps tests fast)."""
    from datetime import UTC

    import pyarrow as pa
    from deltalake import write_deltalake

    def fix(v):
        return v.replace(tzinfo=UTC) if isinstance(v, datetime) and v.tzinfo is None else v

    schema = table.arrow_schema()
    cols = list(zip(*[[fix(v) for v in r] for r in rows], strict=True))
    data = pa.table([pa.array(list(c), type=f.type) for c, f in zip(cols, schema, strict=True)], schema=schema)
    write_deltalake(str(settings.table_path(table.name)), data, mode="overwrite")


def write_bronze(settings, spec: list[tuple], products: list[tuple]) -> None:
    """Bronze events + products for `spec` / (sku, category, price) rows, written with delta-rs (no Spark job)."""
    from ubp.tables import EVENTS, PRODUCTS

    now = datetime(2030, 1, 1)
    write_table(settings, EVENTS, event_rows(spec))
    write_table(settings, PRODUCTS, [(s, c, p, [0] * 16, "/raw/p.parquet", now) for s, c, p in products])


PLANTED_USERS = 120


def write_planted_evaluation(settings):
    """A lakehouse for the evaluation tests, written with delta-rs: every user buys before the as-of; users with
    u % 2 == 1 churn, the others buy category u % 3 in the window. In the evaluation namespace (returned): a `gru`
    member that carries both labels plus noise and an `aggregates` member of pure noise."""
    import numpy as np

    from ubp.stages.evaluate import eval_namespace
    from ubp.tables import USER_AGGREGATES, USER_PROFILES

    spec = []
    for u in range(PLANTED_USERS):
        spec += [("page_visit", u, day(-6), None, 5), ("product_buy", u, day(-5), 100 + (u * 7) % 3, None)]
        if u % 2 == 0:
            spec.append(("product_buy", u, day(3), 100 + u % 3, None))
    write_bronze(settings, spec, [(100, 0, 10), (101, 1, 20), (102, 2, 30)])
    es = settings.with_namespace(eval_namespace(AS_OF))
    rng = np.random.default_rng(0)
    prof, agg = [], []
    for u in range(PLANTED_USERS):
        planted = np.zeros(8)
        planted[0] = 1.0 if u % 2 else -1.0  # the future churn label
        planted[1 + u % 3] = 1.0 if u % 2 == 0 else 0.0  # the future category
        prof.append((u, [float(v) for v in planted + rng.normal(0, 0.3, 8)], "user-test", "user_profile_v1", AS_OF, 2,
                     AS_OF))
        agg.append((u, AS_OF, 2, [float(v) for v in rng.normal(size=5)], "f-test"))  # pure noise
    for table, rows in ((USER_PROFILES, prof), (USER_AGGREGATES, agg)):
        write_table(es, table, rows)
    return es
