#!/usr/bin/env bash
# Issue 19 goal 2 with the tree's defaults (faceweave's depthwise kernels; detail restoration on, then off), the
# flipped test of the depthwise kernels, and the GIL switch interval's effect on 8 live sessions (docs/benchmarks.md §0-28). About 2.5 minutes.
. benchmarks/device/lib.sh
echo "== live, 8 sessions, GIL switch interval 5 / 0.5 / 5 / 0.5 ms"; date
timeout 80 python3 benchmarks/live_bench.py --size 1280x720 --seconds 8 --sessions 8 --switch-interval-ms 5,0.5,5,0.5 \
  --device cuda --json $R/live_si.json > $R/live_si.txt 2>&1
python3 -c "import json,sys; [print(r['switch_interval_ms'], r['fps_out_per_session_mean'], r['dropped'], r['latency_p95_ms'], r['mean_engine_batch']) for r in json.load(open(sys.argv[1]))['runs']]" $R/live_si.json || tail -3 $R/live_si.txt
echo "== goal 2"; date
for d in on off; do timeout 60 python3 benchmarks/gpu_profile.py --batch 8 32 --dtype float16 --repeats 8 --top 8 --no-eager \
  --depthwise faceweave --detail-restore $d --json $R/goal2_$d.json > $R/goal2_$d.txt 2>&1
  grep -E "^graphs.*: " $R/goal2_$d.txt | sed "s/^/$d /" | cut -c1-120; done
timeout 50 python3 -m pytest -q -m gpu -p no:cacheprovider tests/models/test_tflite_graph.py 2>&1 | tail -2
date
