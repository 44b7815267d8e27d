# Two commands: `make demo` runs the main job, `make test` runs the test suite.
# Each creates its own virtual environment. Override the torch pin with e.g.
#   make test TORCH_SPEC="torch==2.5.1"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q -e ".[dev,demo,augment]"
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	WANDB_MODE=offline $(BIN)/python examples/demo.py --out outputs/demo

test: $(STAMP)
	WANDB_MODE=offline $(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/python benchmarks/loader_throughput.py

clean:
	rm -rf $(VENV) outputs .pytest_cache
