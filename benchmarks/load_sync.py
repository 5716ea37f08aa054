"""Loopback load test of ``POST /v1/swaps:sync`` (a benchmark, not a test).

Starts the service on 127.0.0.1 (a free port, temp data folder) unless ``--url`` is given, then runs N concurrent
clients that each send small-image swaps back to back for a bounded time, and prints p50/p99 latency, throughput
and errors as JSON (plus a Markdown row for docs/benchmarks.md).

    python benchmarks/load_sync.py --clients 4 --seconds 30 --size 256 [--sync-batch 16|1] [--device cpu|cuda]

Clients alternate between two sources and three targets (the bundled faces, so the targets differ in size). With
the service's :sync batch on (``--sync-batch`` > 1, the default) requests of concurrent clients run as one batch
on one warm engine; ``--sync-batch 1`` runs each alone on one of ``--sync-concurrency`` slots. The report gives the
mean batch the server ran (own server only).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from PIL import Image

from faceweave.data import media_path


def _scaled_image(name: str, size: int, fmt: str = "png") -> bytes:
    """A bundled face scaled so its longest side is ``size``, encoded as PNG or JPEG (quality 90)."""
    with Image.open(media_path(name)) as src:
        rgb = src.convert("RGB")
    scale = size / max(rgb.size)  # down or up: ``--size 1920`` sends 1080p-class targets
    rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "PNG") if fmt == "png" else rgb.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _start_server(data_dir: Path, workers: int, sync_batch: int, device: str
                  ) -> tuple[str, str, object, threading.Thread, object]:
    import uvicorn

    from faceweave.serve.app import create_app
    from faceweave.serve.auth import create_api_key
    from faceweave.serve.settings import ServiceSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = ServiceSettings(data_dir=data_dir, warmup=True, sync_concurrency=workers, sync_batch=sync_batch,
                               device=device, rate_limit_per_minute=1e7, rate_limit_burst=10**6)  # fmt: skip
    app = create_app(settings)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    while httpx.get(f"{base}/readyz", timeout=5).status_code != 200:  # models warm
        if time.monotonic() > deadline:
            raise RuntimeError("the server did not get ready")
        time.sleep(0.2)
    svc = app.state.service
    return base, create_api_key(svc.store, "bench"), server, thread, svc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an already running server (default: start one here)")
    ap.add_argument("--key", default=os.environ.get("FACEWEAVE_KEY"), help="API key for --url")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long clients keep sending")
    ap.add_argument("--size", type=int, default=256,
                    help="longest side of the target image (the bundled faces scaled to it)")
    ap.add_argument("--format", choices=("png", "jpg"), default="png",
                    help="the targets' format (the answer comes back in it): jpg for the 1080p JPEG case")
    ap.add_argument("--targets", default="astronaut.png,obama2.jpg,grace_hopper.jpg",
                    help="bundled faces the clients send as targets, in turn (obama2.jpg alone at --size 1920: "
                         "1920×1002, a 1080p-class photo)")
    ap.add_argument("--sync-concurrency", type=int, default=2, help="server-side :sync slots (own server only)")
    ap.add_argument("--sync-batch", type=int, default=16, help="server-side :sync batch (1: off; own server only)")
    ap.add_argument("--device", default="auto", help="the server's device (own server only)")
    args = ap.parse_args(argv)

    sources = [_scaled_image(n, min(args.size, 512)) for n in ("obama.jpg", "grace_hopper.jpg")]
    targets = [_scaled_image(n, args.size, args.format) for n in args.targets.split(",")]
    target_type = "image/png" if args.format == "png" else "image/jpeg"
    server = thread = svc = None
    tmp = tempfile.TemporaryDirectory(prefix="faceweave-load-")
    if args.url:
        base, key = args.url.rstrip("/"), args.key
        if not key:
            ap.error("--key (or FACEWEAVE_KEY) is required with --url")
    else:
        base, key, server, thread, svc = _start_server(Path(tmp.name), args.sync_concurrency, args.sync_batch,
                                                       args.device)

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds

    def client(k: int) -> None:
        source, target = sources[k % len(sources)], targets[k % len(targets)]
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as c:
            while time.monotonic() < stop_at:
                files = [("sources", ("s.png", source, "image/png")),
                         ("target", (f"t.{args.format}", target, target_type))]
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/swaps:sync", files=files, data={"consent": "true"})
                    outcome = "ok" if r.status_code == 200 else f"http_{r.status_code}"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                dt = time.perf_counter() - t0
                with lock:
                    if outcome == "ok":
                        latencies.append(dt)
                    else:
                        errors[outcome] = errors.get(outcome, 0) + 1

    t_start = time.monotonic()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    batcher = None if svc is None else svc.sync_batcher  # type: ignore[attr-defined]
    mean_batch = round(batcher.items / batcher.batches, 2) if batcher is not None and batcher.batches else None
    if server is not None:
        server.should_exit = True  # type: ignore[attr-defined]
        assert thread is not None
        thread.join(30)
    tmp.cleanup()

    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    report = {
        "clients": args.clients, "seconds": round(wall, 1), "image": f"{args.size}px {args.format}",
        "targets": args.targets, "ok": len(lat), "errors": errors, "throughput_rps": round(len(lat) / wall, 2),
        "p50_ms": pct(0.50), "p95_ms": pct(0.95),
        "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "server_sync_slots": None if args.url else args.sync_concurrency,
        "server_sync_batch": None if args.url else args.sync_batch, "server_mean_batch": mean_batch,
        "cpus": os.cpu_count(), "load_average": os.getloadavg(),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print(f"| {args.clients} | {args.size}px {args.format} | {report['seconds']} s | {report['ok']} | "
          f"{sum(errors.values())} | "
          f"{report['throughput_rps']} | {report['p50_ms']} | {report['p95_ms']} | {report['p99_ms']} | "
          f"{mean_batch} |")  # fmt: skip
    return 0 if lat and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
