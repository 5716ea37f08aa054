#!/usr/bin/env bash
# Issue 21's GPU checks (docs/quality.md): every device-parametrised test of the rooms the realism work touches
# (per-face blurs, detail and grain restoration, occlusion estimate, eval metrics), then one image swap on CUDA
# against the same swap on the CPU.
#   device run: bash benchmarks/device/i21_check.sh   carry: .device/core312.tar.xz .device/serve312.tar.xz .device/setup.sh
. benchmarks/device/lib.sh
echo "== GPU tests"; date
timeout 300 python3 -m pytest -q -m gpu -p no:cacheprovider tests/ops tests/swapper tests/eval tests/analysis 2>&1 | tail -15
echo "== one swap, cuda vs cpu"; date
M=faceweave/data/media
for d in cuda cpu; do for s in "" "--occlusion"; do
  timeout 120 python3 -c "from faceweave.cli import main; main()" swap -s $M/obama.jpg -t $M/astronaut.png -o $R/swap_${d}${s:+_occ}.png --device $d $s 2>&1 | tail -1
done; done
for d in cuda cpu; do  # the hairline fill and the fringe left out: astronaut's fringe onto obama's high forehead
  timeout 120 python3 -c "from faceweave.cli import main; main()" swap -s $M/astronaut.png -t $M/obama.jpg -o $R/swap_${d}_hair.png --device $d --hairline-fill 2>&1 | tail -1
done
python3 - <<'PY'
import numpy as np, cv2, os
R = os.environ["OUT"] + "/r"
for tag in ("", "_occ", "_hair"):
    a = cv2.imread(f"{R}/swap_cuda{tag}.png").astype(int); b = cv2.imread(f"{R}/swap_cpu{tag}.png").astype(int)
    d = np.abs(a - b)
    print(f"cuda vs cpu{tag}: max {d.max()} levels, mean {d.mean():.4f}, pixels > 2: {(d.max(2) > 2).sum()}")
PY
date
