#!/usr/bin/env bash
# GPU check (issue 6, item 6; issue 12): on a CUDA machine, within about 12 minutes plus up to 5 for step 6, prints
#   1. training-loop throughput on the GPU, hpsearch vs the textbook DataLoader loop (benchmarks/loop_throughput.py)
#   2. the airbench-style network: time to 94% val Top-1 on CIFAR-10 when --data-dir/$CIFAR_DIR holds
#      cifar-10-batches-py/, else throughput on synthetic CIFAR-shaped data (benchmarks/gpu_airbench.py)
#   3. a 16-trial Fashion-MNIST study (studies/fashion_mnist.toml): wall time and best val Top-1
#   4. peak GPU memory (nvidia-smi, sampled every 0.5 s, plus PyTorch's allocator peaks)
#   5. the GPU tests (tests/training/test_gpu.py: training on CUDA, a real CUDA OOM trial followed by a good one)
#   6. trial packs on the GPU: a pack of K against K solo trials, img/s and kernel launches per step, both pack
#      forwards (benchmarks/pack_throughput.py; lenet, vgg, resnet, airbench at K = 1, 2, 4, 8, 16)
#   7. the study of step 3 (pack = auto) against the co-location alternative: 4 and 2 solo workers on one GPU
# Usage: bash benchmarks/gpu_check.sh [RESULTS_DIR]   (FASHION_DIR / CIFAR_DIR: where the datasets lie)
# Installs nothing beyond the project's own install; offline machines may carry wheels in .whl/.
set -uo pipefail
cd "$(dirname "$0")/.."
RES=${1:-benchmarks/results}
mkdir -p "$RES"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
t_start=$(date +%s)
step() { echo; echo "=== $* ($(( $(date +%s) - t_start )) s)"; }

step "machine"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || { echo "no NVIDIA GPU"; exit 1; }
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"

step "install (the project's own install)"
if [ -d .whl ]; then
  if ! $PY -m pip install -q --no-index --find-links .whl --no-build-isolation -e .; then
    echo "editable install failed; falling back to the wheels on PYTHONPATH"
    $PY -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=$PWD:/tmp/site
  fi
else
  $PY -m pip install -q -e . || exit 1
fi

nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 500 > "$RES/gpu_mem_samples.txt" 2>/dev/null &
smi=$!

step "1. loop throughput on the GPU"
timeout 170 $PY benchmarks/loop_throughput.py --device cuda --dataset fashion-mnist,synthetic-cifar \
  ${FASHION_DIR:+--data-dir "$FASHION_DIR"} --batch-size 512 --images 25000 --repeats 3 --workers 8 \
  > "$RES/loop_throughput.log" 2>&1 || echo "loop throughput: failed or timed out"; tail -8 "$RES/loop_throughput.log"
cp benchmarks/results/loop_throughput_cuda.json "$RES/" 2>/dev/null

step "2. airbench / CIFAR-10"
timeout 90 $PY benchmarks/gpu_airbench.py ${CIFAR_DIR:+--data-dir "$CIFAR_DIR"} || echo "airbench: failed or timed out"
cp benchmarks/results/gpu_airbench.json "$RES/" 2>/dev/null

# one 16-trial study of studies/fashion_mnist.toml on the full dataset: study LABEL TIMEOUT [hpsearch run options]
study() {
  local label=$1 limit=$2; shift 2
  local work; work=$(mktemp -d)
  local t0; t0=$(date +%s%N)
  timeout "$limit" $PY -m hpsearch.cli run studies/fashion_mnist.toml --n-trials 16 --device cuda "$@" \
    ${FASHION_DIR:+--data-dir "$FASHION_DIR"} --storage "sqlite:///$work/fm.db" --artifacts "$work/art" \
    > "$RES/fashion_mnist_$label.log" 2>&1
  local rc=$? t1; t1=$(date +%s%N)
  tail -6 "$RES/fashion_mnist_$label.log"
  echo "study [$label] exit $rc, wall $(( (t1 - t0) / 1000000 )) ms (full Fashion-MNIST, 16 trials, $*)"
  $PY -m hpsearch.cli best --storage "sqlite:///$work/fm.db" --study fashion_mnist || true
  $PY -m hpsearch.cli export --storage "sqlite:///$work/fm.db" --study fashion_mnist \
    -o "$RES/fashion_mnist_$label.json" || true
}

step "3. 16-trial Fashion-MNIST study, pack = auto (the default)"
study pack_auto 200

step "7. the co-location alternative: the same study as 4 and 2 solo workers sharing the GPU"
study solo_x4 200 --pack 1 --gpus 0,0,0,0
study solo_x2 200 --pack 1 --gpus 0,0

step "6. trial packs on the GPU"
timeout 300 $PY benchmarks/pack_throughput.py --device cuda --repeats 3 \
  --batch-size 128 --steps 30 --models lenet,vgg,resnet,airbench --ks 1,2,4,8,16 || echo "pack throughput: failed or timed out"
cp benchmarks/results/pack_throughput_cuda.json "$RES/" 2>/dev/null

step "5. GPU tests"
timeout 150 $PY -m pytest tests/training/test_gpu.py -m gpu -q -p no:cacheprovider 2>&1 | tail -15

kill $smi 2>/dev/null
step "4. peak GPU memory"
echo "peak nvidia-smi memory.used: $(sort -n "$RES/gpu_mem_samples.txt" | tail -1) MiB (whole GPU, sampled every 0.5 s)"
echo "done in $(( $(date +%s) - t_start )) s"
