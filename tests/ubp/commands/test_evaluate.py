"""`ubp evaluate` from the command line: the probe options reach the run and its report."""

from __future__ import annotations

import json

from target_fixtures import AS_OF, write_planted_evaluation
from typer.testing import CliRunner


def test_evaluate_cli_probe_width(spark, settings, tmp_path):
    """`--probe-hidden 16` trains the MLP probe 16 wide: results.json and the report say so."""
    from ubp.cli import app

    write_planted_evaluation(settings)
    out = tmp_path / "report"
    r = CliRunner().invoke(app, ["--lakehouse", str(settings.lakehouse), "evaluate", "--no-build", "--as-of",
                                 AS_OF.isoformat(), "--profiles", "gru", "--seeds", "0", "--probes", "mlp",
                                 "--no-ablation", "--probe-hidden", "16", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert "mean score (mlp)" in r.output
    summary = json.loads((out / "results.json").read_text())
    assert summary["probe_config"]["hidden"] == 16
    assert "hidden 16" in (out / "report.md").read_text()
    r = CliRunner().invoke(app, ["--lakehouse", str(settings.lakehouse), "evaluate", "--probe-hidden", "4"])
    assert r.exit_code == 2 and "--probe-hidden" in r.output
