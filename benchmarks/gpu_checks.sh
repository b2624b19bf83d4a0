#!/usr/bin/env bash
# Every GPU check of vislab in one prepared run, for a lent CUDA machine whose python3 has its
# own PyTorch (run from the source tree).  Each part has its own time limit so that one slow or
# broken part leaves the others their turn; the logs land in OUT (default runs/gpu_checks).
#
#   VISLAB_DATA=DIR bash benchmarks/gpu_checks.sh [OUT] [SECONDS]
#   QUICK=1 DEV=cpu bash benchmarks/gpu_checks.sh runs/gpu_checks_dry 900    # a dry run of the script
#
# 1. the GPU's measured matrix rates and the time to 94% Fashion-MNIST (bench_gpu, warm-up first)
# 2. the 5-minute recipe alone on the GPU (bench_gpu --long, goal >= 96%)
# 3. side by side, in separate processes: every recipe trained and evaluated on CUDA
#    (check_device), the CUDA tests of the suite, `vislab train --nproc 1` on NCCL with
#    SyncBatchNorm, the zoo with a longer budget (bench_zoo --device cuda --epochs 15, one
#    process per member) and the candidates for the CPU recipe `best` at their CPU epochs.
set -u
OUT=${1:-runs/gpu_checks}
BUDGET=${2:-560}
mkdir -p "$OUT"
export PYTHONPATH=${PYTHONPATH:-.}${PYTHONPATH:+:.} PYTHONUNBUFFERED=1
start=$(date +%s)
DEV=${DEV:-cuda}
AMP=$([ "$DEV" = cuda ] && echo true || echo false)
Q=$([ "${QUICK:-0}" = 1 ] && echo --quick)
MODELS="lenet5 alexnet zfnet vgg11_bn nin googlenet inception_v3 resnet20 wrn_16_2 resnext50_32x4d
        se_resnet18 densenet_bc_40_12 mobilenet_v2 efficientnet_b0 vit_ti_16"
[ -n "$Q" ] && MODELS="lenet5 resnet20"
left() { echo $(( BUDGET - ($(date +%s) - start) )); }

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"; } > "$OUT/info.log" 2>&1
timeout 100 python3 -m benchmarks.bench_gpu --device $DEV --runs 2 $Q > "$OUT/fast.log" 2>&1
echo "fast done at $(( $(date +%s) - start )) s" >> "$OUT/info.log"
timeout 250 python3 -m benchmarks.bench_gpu --device $DEV --long --runs 1 --no-warmup $Q \
    $([ -n "$Q" ] && echo --set model.name=resnet20) > "$OUT/long.log" 2>&1
echo "long done at $(( $(date +%s) - start )) s" >> "$OUT/info.log"

T=$(( $(left) - 15 ))
mkdir -p "$OUT/side"
export OMP_NUM_THREADS=1
timeout $T python3 -m benchmarks.check_device --device $DEV $([ -n "$Q" ] && echo --limit 100 --recipes default,localization) \
    > "$OUT/side/check_device.log" 2>&1 &
timeout $T python3 -m pytest -q -p no:cacheprovider tests/metrics/test_segmentation.py tests/models/test_deeplab.py -k cuda > "$OUT/side/pytest_cuda.log" 2>&1 &
timeout $T python3 -m vislab train --nproc 1 --run-dir "$OUT/side/ddp_run" --set device=$DEV --set train.amp=$AMP \
    --set train.sync_bn=$AMP --set train.epochs=1 --set data.limit_train=5000 > "$OUT/side/ddp_nccl.log" 2>&1 &
for m in $MODELS; do
  timeout $T python3 -m benchmarks.bench_zoo --device $DEV --epochs 15 --skip-inference --models $m $Q \
      --out "$OUT/zoo" > "$OUT/side/zoo_$m.log" 2>&1 &
done
COMMON=(train.batch_size=128 optim.lr=0.1 optim.weight_decay=5e-4 train.label_smoothing=0.1 data.val_size=5000
        data.augment.crop_pad=2 data.augment.erase=0.25 device=$DEV train.amp=$AMP)
screen() {  # NAME then overrides: one candidate for the CPU recipe `best`, at its CPU epochs
  local name=$1 sets=() o; shift
  for o in "${COMMON[@]}" "$@"; do sets+=(--set "$o"); done
  timeout $T python3 -m benchmarks.bench_recipe --seeds 1 $Q "${sets[@]}" > "$OUT/side/best_$name.log" 2>&1 &
}
screen resnet20_e40 model.name=resnet20 train.epochs=40
screen resnet32_e25 model.name=resnet32 train.epochs=25
screen wrn16_2_e25 model.name=wrn_16_2 train.epochs=25
screen se18_e40 model.name=se_resnet18 "model.kwargs={widths: [16, 32, 64, 128], stem_width: 16}" train.epochs=40
screen cnn64_e11 "model.kwargs={widths: [64, 128, 256], drop: 0.1}" train.epochs=11 train.batch_size=256 optim.lr=0.2
wait
echo "side done at $(( $(date +%s) - start )) s" >> "$OUT/info.log"
tar czf "$OUT/side.tgz" --exclude='*.pt' --exclude='*.safetensors' -C "$OUT" side
tar czf "$OUT/zoo.tgz" --exclude='*.pt' --exclude='*.safetensors' --exclude='*.png' -C "$OUT" zoo_e15
