"""Segment scheduling overhead of the Ray executor, measured on a local Ray cluster with fake GPU nodes.

Per segment the executor (1) marks it running in the job store, (2) calls ``run_segment`` on an actor (a Ray actor
task carrying the job's :class:`WorkSpec`) and waits for the result, (3) marks it done. This measures (1)+(3) on the
real store (SQLite here, or ``--database`` PostgreSQL) and (2) with a no-op actor method, i.e. everything a segment
costs besides its media work and its storage transfer. Ray binds every interface: run it in a private network
namespace::

    RAY_USAGE_STATS_ENABLED=0 unshare -n bash -c 'ip link set lo up; python benchmarks/ray_overhead.py'
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path


class NoOpWorker:
    def run_segment(self, spec: object, segment: dict[str, int], first_pts: int, key: str) -> dict[str, object]:
        return {"frames": segment["frames"], "stats": {}}

    def ping(self) -> str:
        return "ok"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--segments", type=int, default=400)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--database", default=None, help="SQLAlchemy URL (default: a temporary SQLite file)")
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from faceweave.serve.ray_worker import WorkSpec
    from faceweave.serve.segment_store import SqlSegmentStore
    from faceweave.serve.store import SqlJobStore

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0,
                                                            "object_store_memory": 200 * 1024**2})  # fmt: skip
    for _ in range(args.nodes):
        cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=200 * 1024**2)
    ray.init(address=cluster.address, log_to_driver=False, include_dashboard=False)
    try:
        actors = [ray.remote(NoOpWorker).options(num_gpus=1, num_cpus=0).remote() for _ in range(args.nodes)]
        ray.get([a.ping.remote() for a in actors])
        url = args.database or f"sqlite:///{Path(tempfile.mkdtemp()) / 'bench.db'}"
        store = SqlJobStore(url)
        segs = SqlSegmentStore(store.engine)
        spec = WorkSpec("j" * 32, {"crf": 20}, ["t/j/source_0.jpg"], "t/j/target.mp4", "s3://bucket/prefix",
                        {"endpoint_url": "http://127.0.0.1:1", "key": "k", "secret": "s"})  # fmt: skip
        plan = [{"index": i, "start_pts": i * 1000, "end_pts": (i + 1) * 1000, "frames": 300, "keyframe_aligned": True}
                for i in range(args.segments)]  # fmt: skip
        segs.save_plan(spec.job_id, plan)
        db_ms, call_ms = [], []
        for p in plan:  # one at a time: the latency one segment adds
            t0 = time.perf_counter()
            segs.start(spec.job_id, p["index"], "faceweave-swap-0", key="k")
            t1 = time.perf_counter()
            out = ray.get(actors[p["index"] % len(actors)].run_segment.remote(spec, p, 0, "k"))
            t2 = time.perf_counter()
            segs.finish(spec.job_id, p["index"], result_key="k", frames=out["frames"], stats=out["stats"])
            t3 = time.perf_counter()
            db_ms.append((t1 - t0 + t3 - t2) * 1e3)
            call_ms.append((t2 - t1) * 1e3)
        # many in flight at once, spread over the actors: throughput of the scheduling path alone
        t0 = time.perf_counter()
        ray.get([actors[i % len(actors)].run_segment.remote(spec, p, 0, "k") for i, p in enumerate(plan)])
        burst_s = time.perf_counter() - t0
        result = {
            "segments": args.segments, "nodes": args.nodes, "database": url.split(":", 1)[0],
            "store_ms_p50": round(statistics.median(db_ms), 3),
            "store_ms_p95": round(sorted(db_ms)[int(0.95 * len(db_ms))], 3),
            "actor_call_ms_p50": round(statistics.median(call_ms), 3),
            "actor_call_ms_p95": round(sorted(call_ms)[int(0.95 * len(call_ms))], 3),
            "per_segment_ms_p50": round(statistics.median([a + b for a, b in zip(db_ms, call_ms, strict=True)]), 3),
            "pipelined_calls_per_s": round(args.segments / burst_s, 1),
        }  # fmt: skip
        print(json.dumps(result, indent=2))
        store.close()
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main()
