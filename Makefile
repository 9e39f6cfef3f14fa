# The README's two commands: `make run` (the quickstart job) and `make test`.
# Both create .venv on first use and reinstall when pyproject.toml changes.
PYTHON ?= python3
# The CPU wheel of torch these machines provide; on a GPU machine use e.g.
#   make TORCH_SPEC="torch" test
TORCH_SPEC ?= torch==2.13.0
VENV := .venv
PY := $(VENV)/bin/python
HWNAS := $(VENV)/bin/hwnas
STAMP := $(VENV)/.installed

.PHONY: run test test-all bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

# profile a local-cpu LUT -> train a supernet on the digits -> search under device
# budgets -> export the best subnet; rerunning resumes (see experiments/quickstart.yaml)
run: $(STAMP)
	$(HWNAS) run experiments/quickstart.yaml

# pytest exits 5 when it collects no test: make treats that, like any failure, as an error.
# One pytest worker per core (pytest-xdist), a test module's tests on one worker so its
# module fixtures are built once; `pytest tests/...` by hand runs in one process.
test: $(STAMP)
	$(PY) -m pytest -n auto --dist loadscope

test-all: $(STAMP)
	$(PY) -m pytest -n auto --dist loadscope -m ""

bench: $(STAMP)
	$(HWNAS) bench space

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
