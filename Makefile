# Two commands do all the set-up: `make demo` and `make test`.
# A CPU-only machine gets the CPU build of torch (never a multi-GB CUDA download);
# a machine with an NVIDIA driver gets the default (CUDA) build from pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
CPU_TORCH ?= torch==2.13.0
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: setup test demo bench bench-gpu clean

$(VENV)/.rsmoe-installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	if ! nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" >/dev/null 2>&1; then \
		$(PY) -m pip install --quiet "$(CPU_TORCH)"; fi
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

setup: $(VENV)/.rsmoe-installed

test: setup
	$(PY) -m pytest -q -p no:cacheprovider tests

demo: setup
	$(VENV)/bin/rsmoe demo

bench: setup
	$(PY) benchmarks/run_all.py

# on a machine with a GPU: the whole training step in bf16 (batch 2, 4, 8 and up to the largest that fits, compile
# off and on), the depth encoder's share and `rsmoe predict` on an 8192² scene → benchmarks/results/gpu.json
bench-gpu: setup
	$(PY) benchmarks/gpu.py

clean:
	rm -rf runs .pytest_cache
