"""The import graph, read from the source with `ast`: no circles, and no import running up the layers.

Layers, bottom to top (docs/architecture.md, "Layers"):
- core: `ubp/*.py` except `ubp/cli.py` (settings, table contracts, registry, reader, log, publish encoding), plus
  `feature_repo/` (Feast's declarations of the same tables);
- `models/` (PyTorch) and `spark_jobs/` (Spark); `spark_jobs` may import `models`, because Spark's Python workers run
  the models' inference code (embed_users, item_content, item_vectors), never the other way round; inside `models`
  nothing imports a training entry point (`models/train_*.py`);
- `ubp/stages/`: composes the two;
- entry points: `ubp/cli.py`, `ubp/commands/`, `dags/`: they call stages (and core) only.

Every import counts, at module level and inside functions (heavy libraries are imported inside functions, so a
function-level import is as real a dependency as a top-level one).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ubp", "spark_jobs", "models", "dags", "feature_repo")
# folder -> the dotted name it is imported under (pyproject.toml installs the folders as subpackages of `ubp`, so
# site-packages gets one top-level name; `dags/` is read by Airflow from its folder)
IMPORT_NAME = {"spark_jobs": "ubp.spark_jobs", "models": "ubp.models", "feature_repo": "ubp.feature_repo"}

# (importer, imported) edges that break the rules today, each with who removes it. Keep this set shrinking: an
# entry that no longer occurs fails the test, so it is deleted together with the fix.
KNOWN_VIOLATIONS: set[tuple[str, str]] = set()  # (importer, imported) pairs allowed while being fixed

# layer -> the layers it may import (its own included)
ALLOWED: dict[str, set[str]] = {
    "core": {"core"},
    "models": {"core", "models"},
    "spark_jobs": {"core", "models", "spark_jobs"},
    "stages": {"core", "models", "spark_jobs", "stages"},
    "entry": {"core", "stages", "entry"},
}


def layer(module: str) -> str:
    """The layer of a module of ours, by its dotted name."""
    for top in ("spark_jobs", "models"):
        if module == IMPORT_NAME[top] or module.startswith(IMPORT_NAME[top] + "."):
            return top
    if module.split(".")[0] == "dags" or module == "ubp.cli" or module.startswith("ubp.commands"):
        return "entry"
    if module.startswith("ubp.stages"):
        return "stages"
    return "core"  # the rest of ubp, and feature_repo


def discover(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of our packages."""
    modules = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            parts[0] = IMPORT_NAME.get(parts[0], parts[0])
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (`ubp.tables.EVENTS` -> `ubp.tables`)."""
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        candidate = ".".join(parts[:i])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Our modules that `module` imports anywhere in its source (relative imports resolved; a DAG file's
    `import _ubp_common` is its sibling, since Airflow puts the dags folder on sys.path)."""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names = [source] + [f"{source}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            target = _resolve(name, modules)
            if target is None and module.startswith("dags."):
                target = _resolve(f"dags.{name}", modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = discover(root)
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted: every import circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def violations(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    """Edges that run up the layers, or from a models module into a training entry point."""
    bad = set()
    for src, targets in graph.items():
        for dst in targets:
            if layer(dst) not in ALLOWED[layer(src)]:
                bad.add((src, dst))
            elif src.startswith("ubp.models.") and dst.startswith("ubp.models.train_"):
                bad.add((src, dst))
    return bad


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph()


def test_graph_sees_function_level_and_relative_imports(graph):
    # imported inside a function: the stages import pyspark-backed jobs lazily
    assert "ubp.spark_jobs.session" in graph["ubp.stages.sequences"]
    assert "ubp.tables" in graph["ubp.spark_jobs.sequence_rows"]
    assert "dags._ubp_common" in graph["dags.ubp_user_profiles"]  # `import _ubp_common as c`
    assert "ubp.stages.pipeline" in graph["dags._ubp_common"]  # inside the task functions


def test_no_import_circles(graph):
    # the known upward edges are what closes today's circles; without them the graph must be acyclic
    pruned = {m: {t for t in ts if (m, t) not in KNOWN_VIOLATIONS} for m, ts in graph.items()}
    assert cycles(pruned) == []


def test_no_upward_imports(graph):
    found = violations(graph)
    assert found - KNOWN_VIOLATIONS == set(), "imports running up the layers (see this module's docstring)"
    assert KNOWN_VIOLATIONS - found == set(), "fixed: delete these from KNOWN_VIOLATIONS"


def test_checker_finds_a_circle_and_an_upward_import(tmp_path):
    """The checks themselves: a planted circle and a planted core -> stage import are caught."""
    (tmp_path / "ubp" / "stages").mkdir(parents=True)
    for pkg in PACKAGES[1:]:
        (tmp_path / pkg).mkdir()
    (tmp_path / "ubp" / "__init__.py").write_text("")
    (tmp_path / "ubp" / "stages" / "__init__.py").write_text("")
    (tmp_path / "ubp" / "a.py").write_text("def f():\n    from ubp.stages import s\n")
    (tmp_path / "ubp" / "stages" / "s.py").write_text("from ..a import f\n")
    planted = import_graph(tmp_path)
    assert planted["ubp.stages.s"] == {"ubp.a"}  # relative import resolved
    assert cycles(planted) == [["ubp.a", "ubp.stages.s"]]
    assert violations(planted) == {("ubp.a", "ubp.stages"), ("ubp.a", "ubp.stages.s")}  # package + module


def test_one_top_level_name_in_site_packages():
    """The installed distribution declares `ubp` only (a generic `models` would collide with other projects), and
    the editable install's finder maps the design card's folders under it."""
    from importlib.metadata import distribution

    dist = distribution("ubp")
    assert dist.read_text("top_level.txt").split() == ["ubp"]
    import ubp.feature_repo.entities
    import ubp.models.gru_ae
    import ubp.spark_jobs.layout

    assert Path(ubp.models.gru_ae.__file__).parent == ROOT / "models"
    assert Path(ubp.spark_jobs.layout.__file__).parent == ROOT / "spark_jobs"
    assert Path(ubp.feature_repo.entities.__file__).parent == ROOT / "feature_repo"


def test_no_source_imports_the_folders_by_their_bare_names():
    """`import models` would load a second copy of the module next to `ubp.models` (different classes)."""
    bare = set(IMPORT_NAME)
    found = []
    for pkg in (*PACKAGES, "tests", "benchmarks"):
        for path in sorted((ROOT / pkg).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level:
                    names = [node.module or ""]
                else:
                    continue
                found += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in bare]
    assert found == []
