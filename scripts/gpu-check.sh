#!/usr/bin/env bash
# The CUDA checks, for a machine with an NVIDIA GPU and the project's Python dependencies (CI has
# no GPU, so these are run by hand): the CUDA tests (each compares the GPU result with the CPU
# one), the latency benchmark on the GPU, the batch CLI's throughput against a pytorch-grad-cam
# loop on the GPU, torch.compile against eager, and a profile of the CLI. Writes each log to the
# folder given (default gpu-check/) and prints them, with each step's duration.
#
#   bash scripts/gpu-check.sh [OUT_DIR [STEP ...]]
#
# With STEP names only those run (the whole script takes longer than one 10-minute device call;
# e.g. `gpu-check.sh out gpu versions tests latency`, then `gpu-check.sh out throughput-vgg16bn
# throughput-demo-cnn compile profile profile-top`).
set -uo pipefail
out="${1:-gpu-check}"
shift $(( $# > 0 ? 1 : 0 ))
wanted=" $* "
mkdir -p "$out"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 FINERCAM_OFFLINE=1
status=0

step() {  # step NAME COMMAND...: run (if wanted), keep the log, remember a failure, go on
    local name="$1" began=$SECONDS; shift
    if [ "$wanted" != "  " ] && [[ "$wanted" != *" $name "* ]]; then return; fi
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
