#!/usr/bin/env bash
# The CUDA checks in one run, for a machine with an NVIDIA GPU and the project's Python
# dependencies (CI has no GPU, so these are run by hand): the CUDA tests (each compares the GPU
# result with the CPU one), the latency benchmark on the GPU, and the batch CLI's throughput
# against a pytorch-grad-cam loop on the GPU. Writes each log to the folder given (default
# gpu-check/) and prints them.
#
#   bash scripts/gpu-check.sh [OUT_DIR]
set -uo pipefail
out="${1:-gpu-check}"
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 FINERCAM_OFFLINE=1
status=0

step() {  # step NAME COMMAND...: run, keep the log, remember a failure, go on
    local name="$1" began=$SECONDS; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$out/$name.log" || status=1
    echo "=== $name: $((SECONDS - began)) s"
}

step gpu nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
step versions python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0))"
step tests python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py \
    "tests/test_metrics.py::test_runs_on_the_image_device"
step latency python3 -m bench.latency --device cuda --threads 8 --repeats 10 --skip-compile
step throughput-vgg16bn env FINERCAM_DEVICE=cuda python3 -m bench.throughput --images 256 \
    --batch-sizes 1,8,32 \
    --workers 4 --threads 8 --repeats 2
step throughput-demo-cnn env FINERCAM_DEVICE=cuda python3 -m bench.throughput --images 256 \
    --batch-sizes 1,8,32 \
    --model demo-cnn --workers 4 --threads 8 --repeats 2
# torch.compile of the trunk and the CAM tail, default and CUDA-graph modes (compiling takes
# minutes: after the figures above).
step compile python3 -m bench.latency --device cuda --threads 8 --repeats 10 --skip-clip \
    --skip-fgcam --skip-generic --skip-attention --skip-device-paths
# Where a CLI image's time goes on the GPU (one profiled round; the anchor's share is in it too).
step profile env FINERCAM_DEVICE=cuda python3 -m cProfile -o "$out/throughput.prof" \
    -m bench.throughput --images 128 --model demo-cnn --workers 0 --threads 8
step profile-top python3 -c "import pstats, sys; pstats.Stats(sys.argv[1]).sort_stats('tottime').print_stats(30)" "$out/throughput.prof"
exit "$status"
