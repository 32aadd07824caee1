# Two commands do all the set-up on a fresh clone:  `make demo`  and  `make test`.
#   make demo     the data side only (no torch): builds the bundled VLFeedback sample
#   make test     everything the tests need (training stack, a real server), then the suite
# Both install the versions in constraints.txt, the set the suite passes with; `make lock` refreshes it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# uv installs into the venv: the same versions as pip, in a third of pip's time. Modules are compiled to
# bytecode when first imported, not at install (uv's default): compiling all ~6 GB at install was 27 s of a
# 55 s fresh-clone install here, and the suite imports a fraction of it. `make test` and `make demo` let
# Python write that bytecode even where PYTHONDONTWRITEBYTECODE is set (as on this machine), so that
# later processes load it instead of compiling again. uv reads PyPI (or UV_INDEX_URL, UV_FIND_LINKS), not
# pip's configuration files.
UV_VERSION := 0.13.10
INSTALL := $(BIN)/uv pip install --quiet --python $(BIN)/python -c constraints.txt
BYTECODE := PYTHONDONTWRITEBYTECODE=

.PHONY: install install-data demo test test-fast lock clean

install: $(VENV)/.installed-test
install-data: $(VENV)/.installed-data

$(BIN)/uv:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)

$(VENV)/.installed-data: pyproject.toml constraints.txt | $(BIN)/uv
	$(INSTALL) -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/uv
	$(INSTALL) -e ".[test]"
	touch $(VENV)/.installed-data $@

demo: install-data
	rm -rf out/vlfeedback-sample
	$(BYTECODE) $(BIN)/critic-data build --source vlfeedback --input sample/vlfeedback --out out/vlfeedback-sample --seed 0

# The suite runs in parallel (pytest-xdist): its tests are independent (each its own tmp_path, free
# ports); the tests of one file share a worker (--dist loadfile), and with it the file's built fixtures
# and servers. One worker more than the cores: a tenth of the suite's time is spent waiting on servers and
# timeouts, which the extra worker fills (2 cores: 3 workers 268-290 s, 4 workers 309 s and a timing test
# failed, on 2026-12-07; 2 workers were 6.9 min against 5.5 before).
WORKERS ?= $(shell echo $$(( $$(nproc) + 1 )))
test: install
	$(BIN)/ruff check .
	$(BYTECODE) $(BIN)/python -m pytest -q -n $(WORKERS) --dist loadfile --no-loadscope-reorder

# The inner loop: every test but those marked slow (a CLI process, a server, a model), ~1 min on 2 cores.
test-fast: install
	$(BIN)/ruff check .
	$(BYTECODE) $(BIN)/python -m pytest -q -n $(WORKERS) -m "not slow"

# Re-resolve the newest versions pyproject.toml allows in a scratch environment, and record them.
lock:
	rm -rf .venv-lock
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --disable-pip-version-check uv==$(UV_VERSION)
	.venv-lock/bin/uv pip install --quiet --python .venv-lock/bin/python -e ".[test]"
	{ sed -n '1,2p' constraints.txt; .venv-lock/bin/uv pip freeze --quiet --python .venv-lock/bin/python --exclude-editable | grep -v -E '^(critic-data|pip|setuptools|uv)=='; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) out build dist *.egg-info
