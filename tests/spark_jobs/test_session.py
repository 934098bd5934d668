"""The Spark session (`spark_jobs/session.py`): Delta enabled (round trip, delete, time travel), UTC session time
zone, and temporary SQL settings that are put back."""

from __future__ import annotations

import pytest


def test_delta_round_trip_and_time_travel(spark, tmp_path):
    from delta.tables import DeltaTable

    path = str(tmp_path / "t")
    spark.range(5).write.format("delta").save(path)
    DeltaTable.forPath(spark, path).delete("id = 3")
    assert spark.read.format("delta").load(path).count() == 4
    assert spark.read.format("delta").option("versionAsOf", 0).load(path).count() == 5
    assert spark.conf.get("spark.sql.session.timeZone") == "UTC"


def test_with_sql_conf_puts_the_previous_values_back(spark):
    from ubp.spark_jobs.sequences import BUILD_CONF
    from ubp.spark_jobs.session import with_sql_conf

    (key,) = BUILD_CONF
    spark.conf.set(key, "1000")
    with pytest.raises(RuntimeError), with_sql_conf(spark, {key: "2000", "ubp.test.unset": "x"}):
        assert spark.conf.get(key) == "2000" and spark.conf.get("ubp.test.unset") == "x"
        raise RuntimeError("the block fails")
    assert spark.conf.get(key) == "1000" and spark.conf.get("ubp.test.unset", None) is None
