# Two commands do all the set-up on a fresh clone:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# torch/torchvision are pinned to the pair this workplace serves from its local wheel store
# (PyPI's CPU torchvision does not load beside the CPU-only torch wheel); see README.
TORCH  := torch==2.14.1 torchvision==0.29.1

.PHONY: install demo test bench clean

install: $(BIN)/.installed

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: install
	rm -rf out/vlfeedback-sample
	$(BIN)/critic-data build --source vlfeedback --input sample/vlfeedback --out out/vlfeedback-sample --seed 0

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) out build dist *.egg-info
