#!/usr/bin/env bash
# The GPU check: the test suite on a CUDA machine (tests that take a device also run on
# cuda when torch sees one), then the benchmarks (on the CPU and on cuda), including the
# penalty_product rows that decide between cuSPARSE and segment sums on the GPU.
#
#   bench/gpu_check.sh            # uses .venv (make's VENV); needs a CUDA build of torch
#   VENV=/path/to/venv bench/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
if [ ! -x "$PY" ]; then
    echo "no $PY: create it with a CUDA build of torch first (make install installs the CPU one)" >&2
    exit 2
fi
"$PY" - <<'PYEOF'
import sys

import torch

if not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} sees no CUDA device: nothing to check on a GPU")
print(f"device: {torch.cuda.get_device_name(0)}; torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}", flush=True)
try:
    import torch_scatter
    print(f"torch-scatter {torch_scatter.__version__}: its segment sums are compared too")
except ImportError:
    print("torch-scatter is not installed (make install-scatter): its rows are skipped")
PYEOF
"$PY" -m pytest -q
make bench VENV="$VENV"
