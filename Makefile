# Two commands do all the set-up on a fresh clone:  `make demo`  and  `make test`.
#   make demo     the data side only (no torch): builds the bundled VLFeedback sample
#   make test     everything the tests need (training stack, a real server), then the suite
# Both install the versions in constraints.txt, the set the suite passes with; `make lock` refreshes it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# setuptools says "Editable installation ... be careful with folders named like the package" on every
# editable install: information, not a problem of ours; every other warning still shows.
PIP    := PYTHONWARNINGS="ignore:Editable installation:UserWarning" $(BIN)/pip install --quiet \
          --disable-pip-version-check -c constraints.txt

.PHONY: install install-data demo test test-fast lock clean

install: $(VENV)/.installed-test
install-data: $(VENV)/.installed-data

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed-data: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP) -e ".[test]"
	touch $(VENV)/.installed-data $@

demo: install-data
	rm -rf out/vlfeedback-sample
	$(BIN)/critic-data build --source vlfeedback --input sample/vlfeedback --out out/vlfeedback-sample --seed 0

# The suite runs in parallel (pytest-xdist): its tests are independent (each its own tmp_path, free
# ports); the tests of one file share a worker (--dist loadfile), and with it the file's built fixtures
# and servers. One worker more than the cores: a tenth of the suite's time is spent waiting on servers and
# timeouts, which the extra worker fills (2 cores: 5.5 min with 3 workers, 6.9 with 2, 5.5 with 4).
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile

# The inner loop: every test but those marked slow (a CLI process, a server, a model), ~1 min on 2 cores.
test-fast: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n $(WORKERS) -m "not slow"

# Re-resolve the newest versions pyproject.toml allows in a scratch environment, and record them.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet --disable-pip-version-check -e ".[test]"
	{ sed -n '1,2p' constraints.txt; .venv-lock/bin/pip freeze --exclude-editable | grep -v '^critic-data'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) out build dist *.egg-info
