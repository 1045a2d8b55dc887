# make demo: the main job on the embedded digits data.   make test: the whole test suite.
# Both create .venv when it is missing. On a machine without CUDA the CPU build of torch is
# installed first (a plain "pip install torch" would pull a multi-GB CUDA build).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_CPU ?= torch==2.13.0

.PHONY: demo test bench install clean

$(BIN)/telecli: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	if command -v nvidia-smi >/dev/null 2>&1; then :; else \
	  $(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH_CPU)" \
	  || $(BIN)/python -m pip install -q torch --index-url https://download.pytorch.org/whl/cpu; fi
	$(BIN)/python -m pip install -q -e ".[test,parquet]"
	touch $(BIN)/telecli

install: $(BIN)/telecli

demo: $(BIN)/telecli
	$(BIN)/telecli demo --out demo

test: $(BIN)/telecli
	$(BIN)/python -m pytest tests

bench: $(BIN)/telecli
	for b in benchmarks/bench_*.py; do $(BIN)/python $$b || exit 1; done

clean:
	rm -rf $(VENV) demo build *.egg-info
