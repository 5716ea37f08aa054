#!/usr/bin/env bash
# One device call (docs/benchmarks.md §0-27): faceweave's own CUDA depthwise kernel against PyTorch's.
#   bash scripts/device_carry.sh        # here, once per checkout: builds .device/ (ignored)
#   device run: bash benchmarks/device/depthwise_ab.sh   carry: .device/core312.tar.xz .device/serve312.tar.xz .device/setup.sh
# Steps, most important first: compile + load time, GPU tests of the kernel and of the nets with it, the detection
# profile A/B, the stream A/B, the cold start A/B, 8 live sessions A/B (x the shared engine's swap thread off/on), the :sync load test. About 9 minutes.
. benchmarks/device/lib.sh
echo "== 0 compile and load"; date
if ! python3 - <<'PY'
import time, torch
from pathlib import Path
from faceweave.models import cuda_depthwise as c
torch.zeros(1, device="cuda"); torch.cuda.synchronize()
for i in range(2):
    t = time.perf_counter(); k = c.load_kernels(torch.device("cuda"), Path("/tmp/kc")); dt = time.perf_counter() - t
    print(f"load_kernels #{i+1}: {dt*1000:.1f} ms, compiled={k.compiled}, {k.cubin_path.stat().st_size} bytes")
PY
then echo "KERNEL FAILED"; exit 1; fi
echo "== 1 GPU tests with faceweave's kernel as the default"; date
use faceweave
timeout 200 python3 -m pytest -q -m gpu -p no:cacheprovider tests/models tests/analysis 2>&1 | tail -12
echo "== 2 detection kernels"; date
timeout 150 python3 benchmarks/gpu_profile.py --batch 32 --dtype float16 --repeats 8 --top 15 --no-eager \
  --depthwise faceweave,aten --json $R/prof.json > $R/prof.txt 2>&1; grep -E "^graphs.*: " $R/prof.txt | cut -c1-150
echo "== 3 stream A/B"; date
for c in synth photo; do for v in faceweave aten; do stream ${c}_$v --content $c --depthwise $v; done; done
echo "== 4 cold start"; date
cold_starts cold faceweave aten faceweave aten
echo "== 5 live 720p, 8 sessions: depthwise kernels x the shared engine's swap thread"; date
for v in faceweave aten; do use $v; timeout 75 python3 benchmarks/live_bench.py --size 1280x720 --seconds 10 --sessions 8 \
  --swap-thread off,on --device cuda --json $R/live_$v.json > $R/live_$v.txt 2>&1; echo "live $v:"
  python3 -c "import json,sys; [print(r['swap_thread'], r['fps_out_per_session_mean'], r['dropped'], r['latency_p95_ms'], r['mean_engine_batch']) for r in json.load(open(sys.argv[1]))['runs']]" $R/live_$v.json || tail -3 $R/live_$v.txt; done
use faceweave
echo "== 6 :sync load"; date
for n in 1 8 32; do timeout 45 python3 benchmarks/load_sync.py --clients $n --seconds 10 --size 1920 --format jpg \
  --targets obama2.jpg --sync-batch 16 --device cuda > $R/sync_$n.txt 2>&1; tail -1 $R/sync_$n.txt | cut -c1-300; done
date; tar czf $OUT/r.tgz -C $OUT r
