# Two commands: `make demo` runs the main job, `make test` runs the test suite.
# Each creates its own virtual environment. Override the torch pin with e.g.
#   make test TORCH_SPEC="torch==2.5.1"
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test bench fuzz clean

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

# A long seeded fuzz of the tar reader (the test suite runs 2,000 cases): FUZZ_CASES, FUZZ_SEED.
FUZZ_CASES ?= 100000
FUZZ_SEED ?= 1
fuzz: $(STAMP)
	$(BIN)/python -m tests.data.tarfuzz --cases $(FUZZ_CASES) --seed $(FUZZ_SEED)

clean:
	rm -rf $(VENV) outputs .pytest_cache
