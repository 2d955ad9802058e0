#!/bin/bash
# Issue 18: everything a lent NVIDIA GPU machine should do, in ONE call, so that its
# minutes go to measuring. Run from the repository root on the GPU machine:
#
#   ../shared/gpu/make-carry            # here, before the call: cmocka into .carry/
#   (apt-get download libpng-dev libpng16-16 libjpeg62-turbo libjpeg62-turbo-dev libjpeg-dev
#    zlib1g-dev; dpkg -x each into .carry/sysdeps)   # used only if the image lacks them
#   device run, carry [".carry"]:  source .carry/env.sh && bash scripts/gpu-check.sh
#   (prefix CR_GIT_REV=<commit> — from `git rev-parse --short=10 HEAD` here, on a clean
#   tree — so the CSVs name the commit measured: the device's .git is the session's start)
#
# It writes under $OUT (default ./gpu-out), at most 8 files (the device tool's limit):
#   gpu-check.log       everything this script printed, step by step, with timings, and
#                       nvidia-smi's GPU name, driver, memory, compute capability, clocks
#   test-ch05.txt       suite ch05's test programs on the GPU (test_ch05, test_ch05_layers,
#                       test_ch05_train)
#   lab05-gemm.csv      lab 5 full, GEMM: every kernel vs cuBLAS at 1024..8192
#   lab05-conv.csv      lab 5 full, convolution: the standard layers vs cuDNN
#   sanitizer.txt       compute-sanitizer memcheck, racecheck, synccheck over test_ch05,
#                       test_ch05_layers and test_ch05_train
#   fpn-pytorch-gpu.csv PyTorch's FPN-ResNeXt50 latency, batch 1 ... 64, fp32/tf32/fp16
#   lab08-cuda.csv      lab 8 latency --device cuda: our FPN on the GPU, batch 1 ... 64, its
#                       convolutions in fp32, tf32, fp16, bf16 (a profile at batch 32 goes
#                       to gpu-check.log)
#   lab08-cuda-step.csv lab 8 step --device cuda: one training step of the FPN on the GPU
#                       (batch 8, 192 x 192 crops, as chapter 8's CPU table)
# Each step has its own time limit, and a failing step does not stop the later ones; the
# script's exit status says whether any failed. The limits add up to about 20 minutes and
# a device call may take 10: split it with GPU_CHECK_STEPS, e.g. "build test lab" then
# "build sanitizer fpn" (the second build finds build-gpu/ kept on the device and is quick).
# At most 8 files come back, so $OUT holds no more than the 8 above.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
export PATH=/usr/local/cuda/bin:$PATH
failed=""
# The tests' data, as meson test would set it (the test program is run directly).
export CR_GOLDEN_DIR="$PWD/reference/golden" CR_TEST_DATA_DIR="$PWD/tests/data"
# GPU_CHECK_STEPS: the steps to run (default all): build test lab lab8 sanitizer fpn
steps=" ${GPU_CHECK_STEPS:-build test lab lab8 sanitizer fpn} "
want() { [[ "$steps" == *" $1 "* ]]; }
step() {   # step NAME SECONDS COMMAND...: runs COMMAND under a time limit, logs its time
    local name=$1 limit=$2; shift 2
    local t0=$SECONDS
    echo "=== $name (limit ${limit}s) ==="
    timeout "$limit" "$@"
    local rc=$?
    echo "=== $name: rc=$rc, $((SECONDS - t0))s ==="
    [ $rc -eq 0 ] || failed="$failed $name"
    return 0
}

date -u +"date %Y-%m-%dT%H:%M:%SZ"
git log -1 --format='commit %H %s' 2>/dev/null || true
echo "CR_GIT_REV=${CR_GIT_REV:-(unset: the build stamps git describe)}"
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.sm \
    --format=csv 2>&1
nvcc --version | tail -2
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
[ -n "$cc" ] || { echo "gpu-check: no GPU answered nvidia-smi"; exit 1; }

# Libraries the build needs that a GPU image may lack (libpng, libjpeg): Debian's, unpacked
# into .carry/sysdeps by the caller (apt-get download + dpkg -x), used only when missing.
if ! pkg-config --exists libpng libjpeg 2>/dev/null && [ -d .carry/sysdeps ]; then
    sd="$PWD/.carry/sysdeps/usr"
    for pc in "$sd"/lib/x86_64-linux-gnu/pkgconfig/*.pc; do
        sed -i "s|^prefix=.*|prefix=$sd|; s|^libdir=.*|libdir=$sd/lib/x86_64-linux-gnu|; s|^includedir=.*|includedir=$sd/include|" "$pc"
    done
    export PKG_CONFIG_PATH="$sd/lib/x86_64-linux-gnu/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    export LD_LIBRARY_PATH="$sd/lib/x86_64-linux-gnu${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "gpu-check: libpng/libjpeg from .carry/sysdeps"
fi

# 1. build for this GPU's architecture (PTX of it too): only what the GPU run needs.
#    Not -Dwerror: the device's compiler is newer than CI's; its warnings are in the log.
want build && step build 200 bash -c "meson setup build-gpu -Dcuda=enabled -Dgpu_arch=$cc \
    -Dgpu_emulator=disabled -Dbuildtype=release && ninja -C build-gpu tests/test_ch05 tests/test_ch05_layers tests/test_ch05_train labs/lab05-cuda labs/lab08-fpn"

# 2. suite ch05 on the GPU (the test binary itself: meson test would build everything).
want test && step test_ch05 90 bash -c "CR_CUDA_SYNC=1 build-gpu/tests/test_ch05 > '$OUT/test-ch05.txt' 2>&1; \
    rc=\$?; tail -30 '$OUT/test-ch05.txt'; exit \$rc"
want test && step test_ch05_layers 60 bash -c "CR_CUDA_SYNC=1 build-gpu/tests/test_ch05_layers >> '$OUT/test-ch05.txt' 2>&1; \
    rc=\$?; tail -20 '$OUT/test-ch05.txt'; exit \$rc"
want test && step test_ch05_train 60 bash -c "CR_CUDA_SYNC=1 build-gpu/tests/test_ch05_train >> '$OUT/test-ch05.txt' 2>&1; \
    rc=\$?; tail -12 '$OUT/test-ch05.txt'; exit \$rc"

# 3. lab 5, full, in two parts (each CSV is written whole at its end).
want lab && step lab05-gemm 150 build-gpu/labs/lab05-cuda --only gemm --csv "$OUT/lab05-gemm.csv"
want lab && step lab05-conv 80 build-gpu/labs/lab05-cuda --only conv --csv "$OUT/lab05-conv.csv"
# chapter 8's network on the GPU (chapter 5's layers and convolutions), fp32, 384 x 480
# GPU_BATCHES: the batch sizes of lab 8's and PyTorch's FPN sweep (default 1 ... 64)
batches=${GPU_BATCHES:-1,2,4,8,16,32,64}
# GPU_PRECISIONS: the convolutions' precisions of lab 8's sweep (default all four)
want lab8 && step lab08-cuda 150 build-gpu/labs/lab08-fpn latency --device cuda --batches "$batches" \
    --precisions "${GPU_PRECISIONS:-fp32,tf32,fp16,bf16}" --repeats 5 --csv "$OUT/lab08-cuda.csv"
# where the time goes: every module synchronised and timed, batch 32, into this log
want lab8 && step lab08-cuda-profile 60 build-gpu/labs/lab08-fpn latency --device cuda --batches 32 \
    --precisions fp32,tf32 --repeats 3 --profile
# chapter 8's training step on the GPU (chapter 5's cr_cuda_train_step), as chapter 8's CPU table
want lab8 && step lab08-cuda-step 120 build-gpu/labs/lab08-fpn step --device cuda --batch 8 \
    --crop 192 --steps 5 --csv "$OUT/lab08-cuda-step.csv"

# 4. compute-sanitizer over the GPU tests (fewer random cases: racecheck is slow); each tool's
#    limit applies to each test program. GPU_SANITIZERS: "tool:seconds[:test,test] ..." to
#    change them (e.g. racecheck:100:test_ch05_layers runs racecheck over that test alone).
want sanitizer && {
  for tl in ${GPU_SANITIZERS:-memcheck:60 racecheck:100 synccheck:45}; do
    tool=${tl%%:*}; rest=${tl#*:}; lim=${rest%%:*}; only=${rest#*:}
    [ "$only" = "$rest" ] && only="test_ch05 test_ch05_layers test_ch05_train"
    echo "### compute-sanitizer --tool $tool (limit ${lim}s)"
    for t in ${only//,/ }; do
      CR_TEST_SCALE=0.05 CR_CUDA_SYNC=1 timeout "$lim" compute-sanitizer --tool "$tool" \
          --error-exitcode 9 build-gpu/tests/$t 2>&1 | tail -25
      echo "### $tool $t: rc=${PIPESTATUS[0]}, ${SECONDS}s since the script began"
    done
  done
} > "$OUT/sanitizer.txt"
if want sanitizer; then
    grep '^###' "$OUT/sanitizer.txt"
    grep -q 'rc=[^0]' "$OUT/sanitizer.txt" && failed="$failed sanitizer"
fi

# 5. PyTorch's FPN on this GPU: the peer of lab08-cuda.csv's rows.
if ! want fpn; then
    :
elif python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    step fpn-pytorch 90 python3 reference/bench_fpn_gpu.py --batches "$batches" \
        --precisions fp32,tf32,fp16 --repeats 5 --csv "$OUT/fpn-pytorch-gpu.csv"
else
    echo "gpu-check: PyTorch with CUDA is not importable: FPN peer not measured"
fi

if [ -n "$failed" ]; then echo "gpu-check: FAILED:$failed"; exit 1; fi
echo "gpu-check: all steps passed"
