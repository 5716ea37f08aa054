#!/usr/bin/env bash
# One device call (docs/benchmarks.md §0-28): the GPU tests of this session's changes (faceweave's depthwise kernel
# as the default, the detail restoration, the shared live engine's swap thread), the detail restoration's cost in the
# video stream, the depthwise kernel's cold start and :sync A/B, and where 8 live sessions hold the GIL (py-spy).
#   device run: bash benchmarks/device/gpu_check.sh   carry: .device/core312.tar.xz .device/serve312.tar.xz .device/setup.sh
#   and .device/py_spy-*.whl (scripts/device_carry.sh)
. benchmarks/device/lib.sh
echo "== 1 GPU tests, faceweave's depthwise kernel as the default"; date
use faceweave
timeout 240 python3 -m pytest -q -m gpu -p no:cacheprovider tests/models tests/analysis tests/swapper \
  tests/live/test_shared_swap_thread.py tests/pipeline/test_deferred_detection.py 2>&1 | tail -8
use aten
echo "== 2 stream: detail restoration on/off (PyTorch's depthwise kernels)"; date
for c in synth photo; do for d in on off; do stream ${c}_$d --content $c --detail-restore $d; done; done
echo "== 3 cold start, depthwise kernels"; date
cold_starts cold2 aten faceweave aten faceweave
echo "== 4 :sync, 8 clients, depthwise kernels"; date
for v in aten faceweave; do use $v; timeout 45 python3 benchmarks/load_sync.py --clients 8 --seconds 10 --size 1920 \
  --format jpg --targets obama2.jpg --sync-batch 16 --device cuda > $R/sync8_$v.txt 2>&1; echo "$v $(tail -1 $R/sync8_$v.txt | cut -c1-200)"; done
use aten
echo "== 5 live, 8 sessions under py-spy (GIL holders, then every thread)"; date
for m in gil idle; do
  timeout 70 py-spy record -r 200 --$m --threads --nonblocking -f raw -o $R/live8_$m.raw -- python3 benchmarks/live_bench.py \
    --size 1280x720 --seconds 8 --sessions 8 --device cuda --json $R/live8_$m.json > $R/live8_$m.txt 2>&1
  python3 -c "import json,sys; [print('$m', r['fps_out_per_session_mean'], r['latency_p95_ms'], r['mean_engine_batch']) for r in json.load(open(sys.argv[1]))['runs']]" $R/live8_$m.json || tail -3 $R/live8_$m.txt
done
date
