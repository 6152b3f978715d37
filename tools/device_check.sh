#!/usr/bin/env bash
# The checks that need a CUDA GPU, as one script for a lent GPU machine (no network, no pip there).
#
#   bash tools/device_check.sh [tests] [bench] [resnet]      (default: tests bench)
#
# Needs the MNIST .gz files in a git-ignored folder (default device_data/MNIST/raw/, carried) and writes
# everything worth keeping under $OUT (default /tmp/device_out): the environment, test logs, the CUDA benchmark
# JSON and, with `resnet`, seed 0 of mnist-class3-resnet18 at the full profile. Each step has its own time limit
# (seconds; TESTS_S, BENCH_S, RESNET_S), so one slow step cannot eat the others' device time. Off a GPU,
# DEVICE=cpu PROFILE=smoke runs the same steps as a dry run.
set -u
OUT=${OUT:-/tmp/device_out}
DEVICE=${DEVICE:-cuda}
PROFILE=${PROFILE:-full}
export AMNESIAC_DATA=${AMNESIAC_DATA:-$PWD/device_data}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(tests bench)
mkdir -p "$OUT"

python - > "$OUT/env.txt" 2>&1 <<'EOF'
import importlib.util, platform, torch
print("python", platform.python_version(), "torch", torch.__version__, "cuda", torch.cuda.is_available())
if torch.cuda.is_available():
    print("gpu", torch.cuda.get_device_name(0))
for mod in ("pytest", "torchvision", "numpy", "matplotlib"):
    print(mod, "present" if importlib.util.find_spec(mod) else "MISSING")
EOF
cat "$OUT/env.txt"
ls "$AMNESIAC_DATA"/MNIST/raw/*.gz > /dev/null 2>&1 \
  || echo "no MNIST .gz files in $AMNESIAC_DATA/MNIST/raw (copy them there and carry the folder)"

for step in "${steps[@]}"; do
  start=$(date +%s)
  case $step in
    tests)  # the CUDA tests first (conservation and CPU/GPU agreement), then the suite without the book and browser
      timeout "${TESTS_S:-300}" python -m pytest -q -p no:cacheprovider tests/core/test_cuda.py > "$OUT/tests-cuda.log" 2>&1
      echo "tests-cuda rc=$?" | tee -a "$OUT/steps.txt"
      timeout "${TESTS_S:-300}" python -m pytest -q -x -p no:cacheprovider -m "not book" --ignore=tests/core/test_cuda.py \
        > "$OUT/tests-suite.log" 2>&1
      echo "tests-suite rc=$?" | tee -a "$OUT/steps.txt" ;;
    bench)  # logging overhead ratios on the device, written as $OUT/results/bench/<profile>-cuda.json: copy it into
            # results/bench/ and the "Memory and time" chapter shows it beside the CPU's figures
      timeout "${BENCH_S:-240}" python -c "
from pathlib import Path
import torch
from amnesiac_paper.bench import bench_path, format_bench, run_bench
dev = torch.device('$DEVICE')
r = run_bench('$PROFILE', device='$DEVICE', out=bench_path('$PROFILE', dev.type, root=Path('$OUT') / 'results'))
print(format_bench(r))" > "$OUT/bench.log" 2>&1
      echo "bench rc=$?" | tee -a "$OUT/steps.txt" ;;
    resnet)  # one seed of the ResNet-18 class experiment (resumable per method; results only, no weights)
      timeout "${RESNET_S:-420}" python -m amnesiac_paper run mnist-class3-resnet18 --profile "$PROFILE" --seeds 0 \
        --device "$DEVICE" > "$OUT/resnet.log" 2>&1
      echo "resnet rc=$?" | tee -a "$OUT/steps.txt"
      mkdir -p "$OUT/results" && cp -r results/mnist-class3-resnet18 "$OUT/results/" 2>/dev/null
      find "$OUT/results" -name '*.pt' -delete ;;
    *) echo "unknown step $step (valid: tests bench resnet)"; exit 2 ;;
  esac
  echo "$step took $(( $(date +%s) - start )) s" | tee -a "$OUT/steps.txt"
done
