"""Replay a traffic burst against K GPU workers and print job latency and cost (a model, not a measurement).

Discrete-event simulation of the Ray executor: video jobs are cut into segments of ``--segment-s`` seconds; each
worker (one GPU actor on one GPU node) takes the oldest waiting segment; a job is done when its last segment and
then its join have run. Workers autoscale between ``--warm`` and K: one more is asked for whenever segments wait
and fewer than K run or start, and it serves only after ``--startup-s`` (pod scheduling, image pull, model load); a
worker idle for ``--idle-s`` is given back. Image jobs take one slot for ``--image-s``.

The inputs are the measured figures of docs/scaling.md (defaults): 186 fps swap throughput of one H200 node on
1080p30 (docs/benchmarks.md §0, tree ef22fb5), 4 ms scheduling overhead per segment (benchmarks/ray_overhead.py,
local Ray cluster). Traffic, start-up delay, transfer time and prices are assumptions: change them on the command
line. Deterministic for a given ``--seed``.

    python benchmarks/scaling_sim.py --burst-x 10 --burst-min 10 --startup-s 120
"""

from __future__ import annotations

import argparse
import heapq
import math
import random
import statistics


def simulate(k: int, a: argparse.Namespace) -> dict[str, float]:
    rng = random.Random(a.seed)
    horizon = a.hours * 3600.0
    burst_start = a.burst_at_min * 60.0
    burst_end = burst_start + a.burst_min * 60.0
    # arrivals: (time, kind, video seconds)
    arrivals: list[tuple[float, str, float]] = []
    t = 0.0
    while t < horizon:
        rate = a.videos_per_min / 60.0 * (a.burst_x if burst_start <= t < burst_end else 1.0)
        t += rng.expovariate(rate)
        arrivals.append((t, "video", max(5.0, rng.expovariate(1.0 / a.video_s))))
    t = 0.0
    while t < horizon:
        rate = a.images_per_min / 60.0 * (a.burst_x if burst_start <= t < burst_end else 1.0)
        t += rng.expovariate(rate)
        arrivals.append((t, "image", 0.0))
    arrivals.sort()
    seg_service = a.segment_s * a.fps_in / a.node_fps + a.overhead_s + a.transfer_s
    events: list[tuple[float, int, str, object]] = []  # (time, seq, what, payload)
    seq = 0

    def push(when: float, what: str, payload: object) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(events, (when, seq, what, payload))

    for when, kind, dur in arrivals:
        push(when, "arrive", (kind, dur))
    queue: list[tuple[int, float]] = []  # (job id, service seconds) FIFO of work items
    jobs: dict[int, dict[str, float]] = {}
    idle: list[float] = []  # idle workers: since when
    starting = 0
    busy = 0
    gpu_seconds = 0.0
    live_since: dict[int, float] = {}
    wid = 0
    for _ in range(min(a.warm, k)):
        live_since[wid] = 0.0
        idle.append(0.0)
        wid += 1
    latencies: dict[str, list[float]] = {"video": [], "image": []}
    video_seconds = 0.0
    qhead = 0

    def dispatch(now: float) -> None:
        nonlocal qhead, busy, starting
        while qhead < len(queue) and idle:
            idle.pop()
            job, service = queue[qhead]
            qhead += 1
            busy += 1
            push(now + service, "done", job)
        waiting = len(queue) - qhead
        while waiting > 0 and len(live_since) + starting < k:
            starting += 1
            waiting -= 1
            push(now + a.startup_s, "up", None)

    while events:
        now, _, what, payload = heapq.heappop(events)
        if what == "arrive":
            kind, dur = payload  # type: ignore[misc]
            jid = len(jobs)
            if kind == "video":
                n = max(1, math.ceil(dur / a.segment_s))
                jobs[jid] = {"t0": now, "left": n, "join": 1, "dur": dur, "video": 1}
                queue.extend((jid, seg_service) for _ in range(n))
                video_seconds += dur
            else:
                jobs[jid] = {"t0": now, "left": 1, "join": 0, "dur": 0.0, "video": 0}
                queue.append((jid, a.image_s))
        elif what == "up":
            starting -= 1
            live_since[wid] = now - a.startup_s  # billed from the request: the node runs while it starts
            wid += 1
            idle.append(now)
        elif what == "done":
            jid = int(payload)  # type: ignore[arg-type]
            busy -= 1
            idle.append(now)
            j = jobs[jid]
            j["left"] -= 1
            if j["left"] == 0:
                if j["join"]:
                    j["join"] = 0
                    j["left"] = 1
                    queue.append((jid, j["dur"] * a.fps_in / a.join_fps + a.overhead_s + a.transfer_s))
                else:
                    latencies["video" if j["video"] else "image"].append(now - j["t0"])
        # give back workers idle too long (beyond the warm ones)
        while len(idle) > 0 and len(live_since) > a.warm and now - min(idle) > a.idle_s:
            idle.remove(min(idle))
            w = max(live_since)
            gpu_seconds += now - live_since.pop(w)
        dispatch(now)
    end = max(horizon, now)
    gpu_seconds += sum(end - s for s in live_since.values())
    vid, img = sorted(latencies["video"]), sorted(latencies["image"])
    return {"K": k, "p50_s": statistics.median(vid), "p95_s": vid[int(0.95 * (len(vid) - 1))],
            "img_p50_s": statistics.median(img),
            "img_p95_s": img[int(0.95 * (len(img) - 1))],
            "jobs": len(vid) + len(img), "gpu_hours": gpu_seconds / 3600,
            "usd_per_video_hour": gpu_seconds / 3600 * a.usd_per_gpu_hour / max(video_seconds / 3600, 1e-9),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hours", type=float, default=1.0, help="simulated time")
    ap.add_argument("--videos-per-min", type=float, default=2.0, help="normal video job rate")
    ap.add_argument("--video-s", type=float, default=60.0, help="mean video length (s of 1080p30)")
    ap.add_argument("--images-per-min", type=float, default=30.0)
    ap.add_argument("--burst-x", type=float, default=10.0)
    ap.add_argument("--burst-min", type=float, default=10.0)
    ap.add_argument("--burst-at-min", type=float, default=20.0)
    ap.add_argument("--segment-s", type=float, default=10.0, help="FACEWEAVE_RAY_SEGMENT_FRAMES / fps")
    ap.add_argument("--fps-in", type=float, default=30.0)
    ap.add_argument("--node-fps", type=float, default=186.0, help="measured: H200 node, 1080p30, ef22fb5")
    ap.add_argument("--join-fps", type=float, default=5000.0, help="stream copy (modelled)")
    ap.add_argument("--overhead-s", type=float, default=0.004, help="measured: scheduling per segment")
    ap.add_argument("--transfer-s", type=float, default=0.15, help="modelled: segment put + get on S3")
    ap.add_argument("--image-s", type=float, default=0.05, help="modelled: one image on a warm GPU actor")
    ap.add_argument("--startup-s", type=float, default=120.0, help="modelled: GPU pod start-up")
    ap.add_argument("--idle-s", type=float, default=300.0)
    ap.add_argument("--warm", type=int, default=1, help="workers kept up at all times")
    ap.add_argument("--usd-per-gpu-hour", type=float, default=3.5, help="assumed on-demand H200 node price")
    ap.add_argument("--ks", default="1,2,4,8,16,32,64")
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    print(f"{'K':>3} {'jobs':>6} {'video p50 s':>12} {'video p95 s':>12} {'image p50 s':>12} {'image p95 s':>12} "
          f"{'GPU-h':>7} {'$/video-h':>10}")
    for k in (int(x) for x in a.ks.split(",")):
        r = simulate(k, a)
        print(f"{r['K']:>3} {r['jobs']:>6} {r['p50_s']:>12.1f} {r['p95_s']:>12.1f} {r['img_p50_s']:>12.2f} "
              f"{r['img_p95_s']:>12.2f} {r['gpu_hours']:>7.2f} "
              f"{r['usd_per_video_hour']:>10.2f}")


if __name__ == "__main__":
    main()
