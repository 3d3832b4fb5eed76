# wsss: `make demo` runs the workflow on the embedded synthetic dataset; `make test` runs the tests.
# Both create the virtual environment (.venv) and install the package when it is missing or stale.

PYTHON ?= python3
VENV ?= .venv
CORES ?= 2
RUN ?= demo
PY := $(VENV)/bin/python
SNAKEMAKE := $(PY) -m snakemake

.PHONY: install demo report test test-fast lint dag bench system-deps clean

$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

install: $(VENV)/.installed

demo: install
	$(SNAKEMAKE) --cores $(CORES)
	$(SNAKEMAKE) --cores $(CORES) --report results/$(RUN)/report.html

report: install
	$(SNAKEMAKE) --cores $(CORES) --report results/$(RUN)/report.html

lint: install
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/pytest

test-fast: install
	$(VENV)/bin/pytest -m "not slow"

system-deps:
	bash scripts/install_system_deps.sh

dag: install
	mkdir -p results/$(RUN)
	$(SNAKEMAKE) --dag | dot -Tsvg > results/$(RUN)/dag.svg
	$(SNAKEMAKE) --rulegraph | dot -Tsvg > results/$(RUN)/rulegraph.svg
	cp results/$(RUN)/rulegraph.svg docs/rulegraph.svg
	@echo "wrote results/$(RUN)/dag.svg and results/$(RUN)/rulegraph.svg (copied to docs/ for README)"

bench: install
	$(PY) bench/bench_relevance.py --flops
	$(PY) bench/bench_random_walk.py
	$(PY) bench/bench_relevance_gpu.py
	$(PY) bench/bench_coco_convert.py
	$(PY) bench/bench_classifier_step.py

clean:
	rm -rf results/$(RUN) .snakemake
