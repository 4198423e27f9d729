#!/usr/bin/env bash
# GPU figures in one go (each step capped, about 13 minutes at most; an H200's figures, 4 December
# 2026, are in benchmarks/README.md):
#   1. training images/s of pyrovae's step against the plain PyTorch loop at batch 256
#      (benchmarks/train_throughput.py, each pair side by side in one process; the target is a
#      ratio >= 0.9): MLP 784-400-50 and the conv network in float32; the IAF guide;
#      bf16 autocast (--precision bf16); torch.compile; torch.compile with CUDA graphs
#      (--compile-mode reduce-overhead);
#   2. importance-sampled log p(x) on the GPU against a plain PyTorch loop
#      (benchmarks/evaluate.py --device cuda): side by side at K=1000 on 2,000 test images,
#      peak memory against K under a 256M budget, and K=5000 over the full 10,000-image
#      test set, timed;
#   3. time to quality: seconds of training of `pyrovae train --preset best` at batch 256
#      until test log p(x) (K=1000, first 2000 test images) reaches -235 nats
#      (benchmarks/time_to_quality.py).
# A step that fails or runs past its cap is reported and the others still run; the script
# exits 1 if any failed. Each step's output is also in $OUT/STEP.log.
# Copy the tables it prints into benchmarks/README.md, with the GPU's name and the date.
#
# Usage, from the repository root, in an environment with pyrovae installed:
#   bash benchmarks/gpu.sh                 # needs CUDA; writes under runs/gpu-bench/
#   DEVICE=cpu bash benchmarks/gpu.sh --smoke   # a quick check that it runs, on a CPU
#   STEPS="fp32 quality" bash benchmarks/gpu.sh # only these steps (names as printed)
#   PYTHON=.venv/bin/python bash benchmarks/gpu.sh   # another interpreter (default python3)
#   TIME_LIMIT=500 bash benchmarks/gpu.sh  # all steps within 500 s: each cap is cut to the time
#                                          # left, and a step with under 20 s left is skipped
set -uo pipefail

DEVICE=${DEVICE:-cuda}
# The interpreter that has pyrovae and torch (python3 by default: some machines have no `python`).
PYTHON=${PYTHON:-python3}
DATA_DIR=${DATA_DIR:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-runs/gpu-bench}
STEPS=${STEPS:-fp32 iaf quality evaluate bf16 compile cudagraphs}
TIME_LIMIT=${TIME_LIMIT:-0}
smoke=0
[[ "${1:-}" == "--smoke" ]] && smoke=1

if ! [[ "$TIME_LIMIT" =~ ^(0|[1-9][0-9]*)$ ]]; then
    echo "gpu.sh: TIME_LIMIT must be whole seconds, no leading zeros (0: none), got '$TIME_LIMIT'" >&2
    exit 1
fi
known="fp32 iaf quality evaluate bf16 compile cudagraphs"
for name in $STEPS; do
    [[ " $known " == *" $name "* ]] || { echo "gpu.sh: unknown step '$name' in STEPS (known: $known)" >&2; exit 1; }
done

if ! "$PYTHON" -c 'import torch, pyro, pyrovae.cli' 2>/dev/null; then
    echo "gpu.sh: $PYTHON cannot import torch, pyro and pyrovae (pip install -e . in its environment, or set PYTHON)" >&2
    exit 1
fi
if [[ "$DEVICE" == cuda* ]] && ! "$PYTHON" -c 'import torch, sys; sys.exit(not torch.cuda.is_available())'; then
    echo "gpu.sh: no CUDA device visible to torch; it measures a GPU (DEVICE=cpu bash benchmarks/gpu.sh --smoke to check it runs)" >&2
    exit 1
fi
if [[ ! -f "$DATA_DIR/t10k-images-idx3-ubyte.gz" && ! -f "$DATA_DIR/t10k-images-idx3-ubyte" ]]; then
    echo "gpu.sh: no Fashion-MNIST IDX files in $DATA_DIR (apt-get install dataset-fashion-mnist, or set DATA_DIR)" >&2
    exit 1
fi
mkdir -p "$OUT"
"$PYTHON" -c 'import torch; print("torch", torch.__version__, "|",
    torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")'

if (( smoke )); then
    reps=1; images=512; budget=5; k=20; test=100; chunk=1; archs="mlp"
    eval_n=50; eval_k=20; full_k=2; eval_epochs=1; eval_batch=100
else
    reps=5; images=51200; budget=120; k=1000; test=2000; chunk=2; archs="mlp conv"
    eval_n=2000; eval_k=1000; full_k=5000; eval_epochs=3; eval_batch=500
fi

failed=()
# step NAME SECONDS COMMAND...: runs COMMAND under `timeout SECONDS` (no cap with --smoke),
# its output shown and kept in $OUT/NAME.log; a failure is recorded, not fatal.
# COMMAND may be a function exported with `export -f`, run as `bash -c NAME`.
step() {
    local name=$1 seconds=$2
    shift 2
    [[ " $STEPS " == *" $name "* ]] || return 0
    if (( TIME_LIMIT > 0 )); then
        local left=$((TIME_LIMIT - SECONDS))
        if (( left < 20 )); then
            echo "== $name: skipped, ${left} s left of TIME_LIMIT=${TIME_LIMIT}"
            failed+=("$name")
            return 0
        fi
        (( seconds > left )) && seconds=$left
    fi
    echo "== $name (at most ${seconds} s)"
    local started=$SECONDS
    if (( smoke )); then "$@"; else timeout "$seconds" "$@"; fi 2>&1 | tee "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    echo "-- $name: exit $status after $((SECONDS - started)) s"
    (( status == 0 )) || failed+=("$name")
}

# In order of what the issue asks first; the caps add up to about 13 minutes, so on a
# machine that limits one command to 10, run it in two parts with STEPS.
throughput=("$PYTHON" benchmarks/train_throughput.py --device "$DEVICE" --data-dir "$DATA_DIR"
            --batch-size 256 --reps "$reps" --images "$images")
step fp32 120 "${throughput[@]}" --arch $archs --json "$OUT/throughput-fp32.json"
step iaf 60 "${throughput[@]}" --arch mlp --guide iaf --no-memory --json "$OUT/throughput-iaf.json"

quality() {
    rm -rf "$OUT/time-to-quality"
    "$PYTHON" benchmarks/time_to_quality.py --device "$DEVICE" --data-dir "$DATA_DIR" \
        --out "$OUT/time-to-quality" --budget "$budget" --chunk "$chunk" -k "$k" --test-size "$test"
}

eval_run="$OUT/evaluate-run"
evaluation() {
    rm -rf "$eval_run"
    "$PYTHON" -m pyrovae train --dataset fashion-mnist --data-dir "$DATA_DIR" --hidden 400 \
        --latent-dim 50 --epochs "$eval_epochs" --batch-size 256 --device "$DEVICE" \
        --out "$eval_run" --no-progress --quiet || return 1
    local evaluate=("$PYTHON" benchmarks/evaluate.py --run "$eval_run" --device "$DEVICE"
                    --batch-size "$eval_batch") status=0
    # Each part on its own, so that one failing leaves the others' figures.
    "${evaluate[@]}" --n "$eval_n" --k "$eval_k" --reps 3 --json "$OUT/evaluate.json" || status=1
    # A fixed budget, so that the rows show memory bounded in K (the default is a
    # quarter of the GPU's free memory, which holds K=5000 in one chunk).
    "${evaluate[@]}" --memory --n 500 --k 100 1000 "$full_k" --memory-budget 256M || status=1
    "${evaluate[@]}" --full --k "$full_k" --step 2000 || status=1
    return $status
}
export -f quality evaluation
export PYTHON eval_run DEVICE DATA_DIR eval_epochs eval_batch eval_n eval_k full_k OUT budget \
    chunk k test
step quality 180 bash -c quality
step evaluate 120 bash -c evaluation

step bf16 60 "${throughput[@]}" --arch $archs --precision bf16 --no-memory \
    --json "$OUT/throughput-bf16.json"
step compile 120 "${throughput[@]}" --arch mlp --compile --no-memory \
    --json "$OUT/throughput-compile.json"
step cudagraphs 120 "${throughput[@]}" --arch mlp --compile-mode reduce-overhead --no-memory \
    --json "$OUT/throughput-cudagraphs.json"

if (( ${#failed[@]} )); then
    echo "gpu.sh: failed or past their cap: ${failed[*]} (see $OUT/*.log)" >&2
    exit 1
fi
echo "gpu.sh: all steps done in ${SECONDS} s"
