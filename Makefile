# `make demo` and `make test` are the two commands in the README; both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: setup demo test bench chromium
setup: $(VENV)/.installed

# torch==2.13.0 goes first: an unpinned torch would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	touch $@

demo: setup
	$(BIN)/cxr-workbench quickstart --out $(OUT)/quickstart --overwrite

# The browser test drives Debian's Chromium (Playwright cannot download its own browser offline).
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium >/dev/null) \
		|| echo "install Debian's chromium (apt-get install chromium) for tests/test_browser.py"

test: setup chromium
	$(BIN)/python -m pytest -q

bench: setup
	$(BIN)/python benchmarks/bench_phantom.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_invert.py
	$(BIN)/python benchmarks/bench_modconv.py
	$(BIN)/python benchmarks/bench_optimize.py
	$(BIN)/python benchmarks/bench_slider.py
	$(BIN)/python benchmarks/quality.py
