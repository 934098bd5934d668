"""tests/ mirrors the package, so a module's tests are found by its path.

`ubp/stages/ingest.py` is tested in `tests/ubp/stages/test_ingest.py`, `models/gru_ae.py` (imported as
`ubp.models.gru_ae`) in `tests/models/test_gru_ae.py`, `spark_jobs/vocab.py` in `tests/spark_jobs/test_vocab.py`.
Beside the mirror: `tests/dags/` (the Airflow DAGs), `tests/integration/` (whole runs: `ubp run`, the DAG runs),
`tests/helpers/` (shared fixtures, on sys.path through pyproject's `pythonpath`), and the repo-wide checks at the top.

Every module of ubp/, models/ and spark_jobs/ with more than MIN_CODE_LINES lines of code (not blank, not a comment,
not a docstring) has its test module, except the entry modules in NO_TEST_MODULE, each with its reason; and every
test module in the mirrored folders is named after a module that exists.
"""

from __future__ import annotations

import ast
import io
import tokenize
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ubp", "models", "spark_jobs")
MIN_CODE_LINES = 40

# Modules that need no test module of their own (path globs, relative to the repo root), each with the reason.
NO_TEST_MODULE: dict[str, str] = {
    "*/__init__.py": "package markers and re-exports of the public names of the package's modules",
    "ubp/commands/*.py": "typer wrappers of the stages (options in, a summary out): every command runs through the "
                         "CLI in the stage tests, tests/ubp/test_cli.py and tests/integration/test_ubp_run.py",
}

# Modules still tested only inside another module's test file: module -> that test file. Keep this shrinking: once
# the module's own test file exists, the entry fails the test and is deleted.
TESTED_ELSEWHERE: dict[str, str] = {
    "ubp/publish/incremental.py": "tests/ubp/stages/test_publish.py",  # publish_view, byte-exact against Feast
}


def code_lines(source: str) -> int:
    """Lines holding code: not blank, not only a comment, not part of a module, class or function docstring."""
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.ENDMARKER}
    lines: set[int] = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type not in skip:
            lines.update(n for n in range(tok.start[0], tok.end[0] + 1) if n not in docstrings)
    return len(lines)


def mirrored_test(module: Path) -> Path:
    """`ubp/stages/ingest.py` -> `tests/ubp/stages/test_ingest.py` (relative paths)."""
    return Path("tests") / module.parent / f"test_{module.name}"


def _modules(root: Path) -> list[Path]:
    return [p.relative_to(root) for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))]


def missing_tests(root: Path = ROOT, exempt: dict[str, str] = NO_TEST_MODULE,
                  elsewhere: dict[str, str] = TESTED_ELSEWHERE) -> list[str]:
    """Modules above the size limit without their mirrored test module (and not exempt or listed as tested
    elsewhere), with their code-line counts."""
    missing = []
    for module in _modules(root):
        rel = module.as_posix()
        if any(fnmatch(rel, pattern) for pattern in exempt) or rel in elsewhere:
            continue
        n = code_lines((root / module).read_text())
        if n > MIN_CODE_LINES and not (root / mirrored_test(module)).is_file():
            missing.append(f"{rel} ({n} code lines): add {mirrored_test(module).as_posix()}")
    return missing


def orphan_tests(root: Path = ROOT) -> list[str]:
    """Test modules in the mirrored folders whose module does not exist (renamed, moved, or a misplaced test)."""
    orphans = []
    for pkg in PACKAGES:
        for test in sorted((root / "tests" / pkg).rglob("test_*.py")):
            rel = test.relative_to(root / "tests")
            if not (root / rel.parent / rel.name.removeprefix("test_")).is_file():
                orphans.append(test.relative_to(root).as_posix())
    return orphans


def test_every_module_of_size_has_its_mirrored_test_module():
    assert missing_tests() == []


def test_every_mirrored_test_module_names_an_existing_module():
    assert orphan_tests() == []


def test_exemptions_are_current():
    modules = {m.as_posix() for m in _modules(ROOT)}
    for pattern in NO_TEST_MODULE:
        assert any(fnmatch(m, pattern) for m in modules), f"{pattern} matches no module: delete the entry"
    for module, test in TESTED_ELSEWHERE.items():
        assert module in modules, f"{module} is gone: delete its TESTED_ELSEWHERE entry"
        assert (ROOT / test).is_file(), f"{module}: {test} does not exist"
        own = mirrored_test(Path(module)).as_posix()
        assert not (ROOT / own).is_file(), f"{module} has {own} now: delete its TESTED_ELSEWHERE entry"


def test_checker_counts_code_lines_and_finds_a_missing_test(tmp_path):
    body = "\n".join(f"x{i} = {i}" for i in range(MIN_CODE_LINES + 1))
    assert code_lines('"""A docstring\nof two lines."""\n\n# a comment\n' + body + "\n") == MIN_CODE_LINES + 1
    assert code_lines('def f():\n    """Doc."""\n    return (1,\n            2)\n') == 3
    for pkg in PACKAGES:
        (tmp_path / pkg / "sub").mkdir(parents=True)
    (tmp_path / "ubp" / "sub" / "big.py").write_text(body)
    (tmp_path / "ubp" / "sub" / "small.py").write_text("x = 1\n")
    (tmp_path / "models" / "big.py").write_text(body)
    (tmp_path / "spark_jobs" / "entry.py").write_text(body)
    got = missing_tests(tmp_path, exempt={"spark_jobs/entry.py": "an entry module"}, elsewhere={})
    assert got == [f"ubp/sub/big.py ({MIN_CODE_LINES + 1} code lines): add tests/ubp/sub/test_big.py",
                   f"models/big.py ({MIN_CODE_LINES + 1} code lines): add tests/models/test_big.py"]
    (tmp_path / "tests" / "models").mkdir(parents=True)
    (tmp_path / "tests" / "models" / "test_big.py").write_text("")
    (tmp_path / "tests" / "models" / "test_gone.py").write_text("")
    assert missing_tests(tmp_path, exempt={"spark_jobs/*": ""}, elsewhere={"ubp/sub/big.py": "x"}) == []
    assert orphan_tests(tmp_path) == ["tests/models/test_gone.py"]
