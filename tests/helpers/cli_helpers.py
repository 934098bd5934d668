"""Run `ubp` in-process through its real entry point (`ubp.cli.run`) and check the one-line error contract."""

from __future__ import annotations

import json
import sys


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    from ubp import cli

    monkeypatch.setattr(sys, "argv", ["ubp", *args])
    try:
        cli.run()
        code = 0
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    return code, out.out, out.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    assert "Traceback" not in err and "java" not in err.lower()
    for needle in needles:
        assert needle in lines[0], lines[0]


def printed_json(out: str) -> dict:
    """The indented JSON document a command prints (`typer.echo(json.dumps(..., indent=2))`), without the log or
    progress lines around it."""
    lines = out.splitlines()
    doc = "\n".join(lines[lines.index("{"):])
    return json.loads(doc[: doc.rindex("}") + 1])
