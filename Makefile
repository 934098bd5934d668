# Two commands do all set-up on a fresh machine:  `make demo` (the main job)  and  `make test` (the tests).
# Both bootstrap idempotently: a .venv with the locked stack (requirements.lock; uv, reusing ~/.cache/uv) and the
# Delta jars (Maven Central, cached in ~/.cache/ubp/jars), so a fresh clone does not download gigabytes again, and
# the Spark driver's class-data-sharing archive (~/.cache/ubp/cds, see ubp/jvm_cds.py).
PY        ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
STAMP     := $(VENV)/.ubp-bootstrap
DEMO_RAW  ?= demo_raw
LAKEHOUSE ?= lakehouse
DEMO_USERS ?= 3000
DEMO_DAYS  ?= 60
DEMO_EPOCHS ?= 4   # epoch cap for the demo's models (keeps `make demo` to minutes on 2 cores)
PYTEST_ARGS ?=

# `make lock` options, e.g. --upgrade-package typer, or --upgrade for everything (see docs/operations.md)
LOCK_ARGS ?=

.PHONY: bootstrap demo test lint bench clean lock

bootstrap: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@command -v java >/dev/null || { echo "Java 17 is needed (apt-get install openjdk-17-jre-headless)"; exit 1; }
	@$(PY) -m uv --version >/dev/null 2>&1 || $(PY) -m pip install -q uv
	@test -x $(BIN)/python || $(PY) -m uv venv -q -p $(PY) $(VENV)
	@# offline first: the pinned stack is usually all in the cache. Online, uv fetched pyspark's sdist again on
	@# every install on this machine and rebuilt it into a new 1.4 GB cache revision each time (53 GB after a day
	@# of fresh clones); online only when something is missing.
	@# The tested versions of everything (requirements.lock), then ubp itself without resolving again.
	$(PY) -m uv pip install -q --offline -p $(BIN)/python -r requirements.lock 2>/dev/null || \
	  $(PY) -m uv pip install -q -p $(BIN)/python -r requirements.lock
	$(PY) -m uv pip install -q --offline -p $(BIN)/python --no-deps -e . 2>/dev/null || \
	  $(PY) -m uv pip install -q -p $(BIN)/python --no-deps -e .
	$(BIN)/python -m ubp.jars >/dev/null
	$(BIN)/python -m ubp.jvm_cds >/dev/null  # faster Spark JVM start; best effort, once per JVM + class path
	@touch $@

demo: bootstrap
	$(BIN)/ubp demo-data --out $(DEMO_RAW) --users $(DEMO_USERS) --days $(DEMO_DAYS) --seed 7 --bad-row-rate 0.001
	$(BIN)/ubp --lakehouse $(LAKEHOUSE) run --raw $(DEMO_RAW) --max-epochs $(DEMO_EPOCHS)
	$(BIN)/ubp --lakehouse $(LAKEHOUSE) demo-readback
	@echo "results: Delta tables in $(LAKEHOUSE)/{bronze,silver,gold}, models in $(LAKEHOUSE)/_models," \
	  "Feast online store in $(LAKEHOUSE)/_feast, log in $(LAKEHOUSE)/_logs/ubp.log"

test: bootstrap
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

lint: bootstrap
	$(BIN)/ruff check .

bench: bootstrap
	@# scale_run.py and cluster_vs_local.py (hours, half an hour) and proctree.py (a helper) are left out
	@for b in benchmarks/*.py; do case $$b in */proctree.py|*/scale_run.py|*/cluster_vs_local.py) continue;; esac; \
	  echo "== $$b"; $(BIN)/python $$b || exit 1; done

# Re-resolve requirements.lock after a change to pyproject.toml's dependencies. Keeps every pin that still fits;
# LOCK_ARGS=--upgrade-package NAME moves one package, LOCK_ARGS=--upgrade all of them.
lock:
	$(PY) -m uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 -q -o requirements.lock $(LOCK_ARGS)

clean:
	rm -rf $(LAKEHOUSE) $(DEMO_RAW) reports .pytest_cache
