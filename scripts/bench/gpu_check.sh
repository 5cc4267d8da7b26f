#!/usr/bin/env bash
# The GPU check, run from the kit on a bare GPU machine; JSON results in $OUT (default ./gpu_results).
#
# Here:  make gpu-kit                              (build/gpu-kit, under 50 MiB; scripts/bench/gpu_kit.py)
# There: carry build/gpu-kit with the working tree, then  bash scripts/bench/gpu_check.sh
#
# It unpacks the kit (its own Java runtime, TorchServe, archives, weights, sample images), then runs:
#   tests       pytest -m gpu on the handlers (CPU: the device-path tests, on libjpeg)
#   precision   fp16 vs fp32 boxes on real images            -> precision.json
#   jpegs       nvJPEG vs PIL on unusual JPEGs              -> jpegs.json
#   inprocess   img/s by batch size and decode path         -> gpu_inprocess.json
#   served      img/s through TorchServe, GPU model config  -> gpu_served.json
#   summary     each goal met / not met                     -> gpu_check.json
# Budget: every step has its own timeout, under 7 minutes in all. Without CUDA the same steps run their
# CPU side (shipped CPU archive, short sweeps): tests/integration/test_gpu_kit.py runs it that way with
# the system Java hidden (GPU_CHECK_TESTS=0 skips the pytest step there). Exit status: the number of
# failed steps (0 = all passed).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-$PWD/gpu_results}
PY=${PYTHON:-python3}
KIT=${KIT:-build/gpu-kit}
DEST=${KIT_DEST:-${TMPDIR:-/tmp}/gpu-kit}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
start=$(date +%s)
failed=0
step() { echo "=== [$(($(date +%s) - start))s] $*"; }
run() {  # run NAME TIMEOUT_S CMD...: a failed or timed-out step is counted, the next still runs
  local name=$1 limit=$2
  shift 2
  timeout "$limit" "$@"
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    echo "FAILED: $name (exit $rc)"
    failed=$((failed + 1))
  fi
}

step "environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
$PY -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.cuda.is_available())"
CUDA=$($PY -c "import torch; print(int(torch.cuda.is_available()))")

step "unpacking $KIT into $DEST"
env_lines=$($PY -m scripts.bench.gpu_kit unpack --kit "$KIT" --dest "$DEST") || { echo "cannot unpack the kit: run make gpu-kit and carry build/gpu-kit"; exit 99; }
eval "$env_lines"
export PYTHON=$PY
java -version 2>&1 | head -1
$PY -c "import ts, sys; print('torchserve from', ts.__file__); sys.exit(0 if ts.__file__.startswith('$DEST') else 1)" \
  || { echo "ts does not come from the kit"; exit 99; }

batches=1,4; seconds=1; archive=$KIT_MODELS/face_detector-2.0.mar  # CPU side: the shipped archive
levels=1,2; duration=2; warmup=1
server_warmup=10; server_warmup_max=25  # the JVM's JIT is waited for (scripts/bench/served.py), briefly
if [ "$CUDA" = 1 ]; then
  export CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-0}
  step "GPU tests (pytest -m gpu)"
  run tests 150 $PY -m pytest -m gpu tests/unit/handlers -q -p no:cacheprovider --junitxml="$OUT/tests.xml"
  batches=1,8,32,64,128; seconds=3; archive=$KIT_GPU_MODELS/face_detector-2.0.mar
  levels=16,64,128; duration=5; warmup=2
  server_warmup=20; server_warmup_max=60  # 16 cores: the JIT settles sooner than on 2
elif [ "${GPU_CHECK_TESTS:-1}" = 0 ]; then
  step "no CUDA: tests skipped (GPU_CHECK_TESTS=0)"
else
  step "no CUDA: the device path's tests on the CPU"
  run tests 240 $PY -m pytest tests/unit/handlers/test_decode_paths.py tests/unit/handlers/test_device_faults.py \
    -q -p no:cacheprovider --junitxml="$OUT/tests.xml"
fi

step "fp16 vs fp32 on real images"
run precision 60 $PY -m scripts.bench.gpu_checks precision --out "$OUT/precision.json"
step "device JPEG decoder vs PIL on unusual JPEGs"
run jpegs 60 $PY -m scripts.bench.gpu_checks jpegs --out "$OUT/jpegs.json"
step "in-process img/s by batch size and decode path"
run inprocess 90 $PY -m scripts.bench.gpu --batches "$batches" --seconds "$seconds" --out "$OUT/gpu_inprocess.json"
step "served img/s: TorchServe from the kit, $(basename "$(dirname "$archive")")"
run served 150 $PY -m scripts.bench --targets torchserve --archive "$archive" --concurrency "$levels" \
  --duration "$duration" --warmup "$warmup" --server-warmup "$server_warmup" \
  --server-warmup-max "$server_warmup_max" --out "$OUT/gpu_served.json"
step "summary"
run summary 30 $PY -m scripts.bench.gpu_checks summary --dir "$OUT" --cuda "$CUDA" --out "$OUT/gpu_check.json"
step "done: $failed failed step(s)"
exit "$failed"
