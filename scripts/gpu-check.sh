#!/bin/bash
# Issue 18: everything a lent NVIDIA GPU machine should do, in ONE call, so that its
# minutes go to measuring. Run from the repository root on the GPU machine:
#
#   ../shared/gpu/make-carry            # here, before the call: cmocka into .carry/
#   device run, carry [".carry"]:  source .carry/env.sh && bash scripts/gpu-check.sh
#
# It writes under $OUT (default ./gpu-out), at most 8 files (the device tool's limit):
#   gpu.txt             nvidia-smi: GPU name, driver, memory, compute capability, clocks
#   gpu-check.log       everything this script printed, step by step, with timings
#   sanitizer.txt       compute-sanitizer memcheck, racecheck, synccheck over test_ch05
#   meson-testlog.txt   suite ch05 on the GPU (and the emulator, for comparison)
#   lab05-gpu.csv       lab 5 full: every GEMM kernel vs cuBLAS, conv vs cuDNN
#   fpn-pytorch-gpu.csv PyTorch's FPN-ResNeXt50 latency, batch 1..64, fp32/tf32/fp16
# Each step has its own time limit, and a failing step does not stop the later ones; the
# script's exit status says whether any failed. Budget: about 8 minutes on an H100/H200.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu-check.log") 2>&1
export PATH=/usr/local/cuda/bin:$PATH
failed=""
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
nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap,clocks.max.sm,clocks.sm \
    --format=csv > "$OUT/gpu.txt" 2>&1
nvcc --version | tail -2 >> "$OUT/gpu.txt"
cat "$OUT/gpu.txt"
cc=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -1 | tr -d '. ')
[ -n "$cc" ] || { echo "gpu-check: no GPU answered nvidia-smi"; exit 1; }

# 1. build for this GPU's architecture (PTX of it too), release, warnings as errors.
step build 300 bash -c "meson setup build-gpu -Dcuda=enabled -Dgpu_arch=$cc \
    -Dbuildtype=release -Dwerror=true >/dev/null && ninja -C build-gpu >/dev/null"

# 2. compute-sanitizer over the GPU test (fewer random cases: racecheck is slow).
{
  for tool in memcheck racecheck synccheck; do
    echo "### compute-sanitizer --tool $tool"
    CR_TEST_SCALE=0.1 CR_CUDA_SYNC=1 timeout 240 compute-sanitizer --tool "$tool" \
        --error-exitcode 9 build-gpu/tests/test_ch05 2>&1 | tail -40
    echo "### $tool: rc=${PIPESTATUS[0]}"
  done
} > "$OUT/sanitizer.txt"
grep '^###' "$OUT/sanitizer.txt"
grep -q 'rc=[^0]' "$OUT/sanitizer.txt" && failed="$failed sanitizer"

# 3. suite ch05 (GPU and emulator) and any GPU tests of later chapters.
step suites 300 meson test -C build-gpu --suite ch05 --suite ch07 --suite ch08 --print-errorlogs
cp build-gpu/meson-logs/testlog.txt "$OUT/meson-testlog.txt" 2>/dev/null

# 4. lab 5, full.
step lab05 300 build-gpu/labs/lab05-cuda --csv "$OUT/lab05-gpu.csv"

# 5. PyTorch's FPN on this GPU: the peer for chapter 8's GPU path (lab 8 has no CUDA
#    path yet: the script measures the peer so that the gap is known when it lands).
if python3 -c 'import torch; assert torch.cuda.is_available()' 2>/dev/null; then
    step fpn-pytorch 240 python3 reference/bench_fpn_gpu.py --batches 1,2,4,8,16,32,64 \
        --precisions fp32,tf32,fp16 --csv "$OUT/fpn-pytorch-gpu.csv"
else
    echo "gpu-check: PyTorch with CUDA is not importable: FPN peer not measured"
fi

if [ -n "$failed" ]; then echo "gpu-check: FAILED:$failed"; exit 1; fi
echo "gpu-check: all steps passed"
