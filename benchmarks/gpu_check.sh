#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): one 2-epoch cell of paper_mlp, paper_convnet and paper_vit on
# full MNIST at n_angles 16, and the CNN kernels on CUDA against the CPU; samples/s and agreement.
# Sized for under 8 minutes on one H200 (16 cores); prints a table, writes $OUT/gpu_check.json and .log.
#
# The GPU machine reaches no package registry and its image has Python 3.12 with torch, lightning,
# timm, ... but not jsonargparse, pydantic, vit-pytorch, mlxtend, e2cnn. So, in two steps:
#   benchmarks/gpu_check.sh --prepare   # here, with the registry: .gpu/ = py3.12 wheels of what the image
#                                       # lacks + full MNIST's archive (from the sha256-checked cache)
#   benchmarks/gpu_check.sh             # there, with .gpu carried: installs the wheels into /tmp, puts full
#                                       # MNIST into $ORBITBENCH_DATA by `orbitbench data --fetch` (the same
#                                       # fetch and checks as `make install`, from the carried archive), runs
#   benchmarks/gpu_check.sh --dry-run   # anywhere: the same steps at toy size on the CPU (< 1 min)
# Through the device tool: run(command="bash benchmarks/gpu_check.sh", carry=[".gpu"], timeout_s=540).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
CARRY=$REPO/.gpu
mode=${1:-run}
case "$mode" in
  run|--dry-run|--prepare) ;;
  *) echo "usage: benchmarks/gpu_check.sh [--prepare | --dry-run]" >&2; exit 2 ;;
esac
# Versions as pinned or installed by `make install` (pyproject.toml); py3.12 wheels for the GPU image.
WHEELS=(jsonargparse==4.53.0 docstring-parser==0.18.0 typeshed-client==2.15.0 pydantic==2.14.4 pydantic-core==2.50.5
        annotated-types==0.8.0 typing-inspection==0.4.5 typing-extensions==4.16.0 vit-pytorch==1.26.14
        mlxtend==0.23.4 e2cnn==0.2.3)

local_python() {  # a venv of `make install` (VENV, .venv), else the python3 on PATH
  for candidate in "${VENV:-.venv}/bin/python" python3; do
    if command -v "$candidate" >/dev/null 2>&1; then echo "$candidate"; return; fi
  done
}

if [ "$mode" = "--prepare" ]; then
  PY=$(local_python)
  rm -rf "$CARRY" && mkdir -p "$CARRY/wheels" "$CARRY/registry"
  platforms=()
  for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
    platforms+=(--platform "$p")
  done
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${platforms[@]}" \
    -d "$CARRY/wheels" "${WHEELS[@]}"
  "$PY" - "$CARRY/registry" <<'EOF'
import sys
from pathlib import Path
from orbitbench.data_cache import installed, write_archive
if not installed():
    sys.exit("gpu_check: full MNIST is not installed here (`orbitbench data --fetch true` first)")
print(f"gpu_check: wrote {write_archive(Path(sys.argv[1]))}")
EOF
  echo "gpu_check: prepared $(du -sh "$CARRY" | cut -f1) in $CARRY; carry it: run(command=\"bash benchmarks/gpu_check.sh\", carry=[\".gpu\"])"
  exit 0
fi

OUT=${OUT:-$REPO/benchmarks/out/gpu_check}
mkdir -p "$OUT"
PY=$(local_python)
if ! "$PY" -c "import orbitbench, jsonargparse, pydantic" >/dev/null 2>&1; then
  # No orbitbench install (the GPU image): the carried wheels, and this tree as a package of links
  # (orbitbench.models and orbitbench.datamodules live at the top level, as pyproject.toml maps them).
  PY=python3
  site=/tmp/orbitbench-site src=/tmp/orbitbench-src
  [ -d "$CARRY/wheels" ] || { echo "gpu_check: no orbitbench here and no $CARRY/wheels (run --prepare where pip works)" >&2; exit 2; }
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" "$CARRY"/wheels/*.whl
  rm -rf "$src" && mkdir -p "$src/orbitbench"
  ln -s "$REPO"/orbitbench/* "$src/orbitbench/"
  ln -s "$REPO/models" "$src/orbitbench/models"
  ln -s "$REPO/datamodules" "$src/orbitbench/datamodules"
  export PYTHONPATH="$src:$site${PYTHONPATH:+:$PYTHONPATH}"
  export ORBITBENCH_DATA=${ORBITBENCH_DATA:-/tmp/orbitbench-data}
fi
export PYTHONUNBUFFERED=1
if [ -d "$CARRY/registry" ]; then  # no registry here: pip reads the carried archive instead
  PIP_NO_INDEX=1 PIP_FIND_LINKS="$CARRY/registry" "$PY" -m orbitbench data --fetch true
fi
"$PY" -m orbitbench data
case "$mode" in
  run) args=(--runs /tmp/gpu_check_runs) ;;
  --dry-run) args=(--dry-run --runs "$(mktemp -d)") ;;
esac
"$PY" benchmarks/gpu_check.py --out "$OUT" "${args[@]}" 2>&1 | tee "$OUT/gpu_check.log"
