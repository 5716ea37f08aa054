"""Loopback load test of ``POST /v1/swaps:sync`` (a benchmark, not a test).

Starts the service on 127.0.0.1 (a free port, temp data folder) unless ``--url`` is given, then runs N concurrent
clients that each send small-image swaps back to back for a bounded time, and prints p50/p99 latency, throughput
and errors as JSON (plus a Markdown row for docs/benchmarks.md).

    python benchmarks/load_sync.py --clients 4 --seconds 30 --size 256
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


def _small_png(name: str, size: int) -> bytes:
    with Image.open(media_path(name)) as src:
        rgb = src.convert("RGB")
    rgb.thumbnail((size, size))
    buf = io.BytesIO()
    rgb.save(buf, "PNG")
    return buf.getvalue()


def _start_server(data_dir: Path, workers: int) -> tuple[str, str, object, threading.Thread]:
    import uvicorn

    from faceweave.serve.app import create_app
    from faceweave.serve.auth import create_api_key
    from faceweave.serve.settings import ServiceSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    settings = ServiceSettings(data_dir=data_dir, warmup=True, sync_concurrency=workers,
                               rate_limit_per_minute=1e7, rate_limit_burst=10**6)  # fmt: skip
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
    return base, create_api_key(app.state.service.store, "bench"), server, thread


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="an already running server (default: start one here)")
    ap.add_argument("--key", default=os.environ.get("FACEWEAVE_KEY"), help="API key for --url")
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=30.0, help="how long clients keep sending")
    ap.add_argument("--size", type=int, default=256, help="longest side of the target image")
    ap.add_argument("--sync-concurrency", type=int, default=2, help="server-side :sync slots (own server only)")
    args = ap.parse_args(argv)

    source, target = _small_png("obama.jpg", args.size), _small_png("astronaut.png", args.size)
    server = thread = None
    tmp = tempfile.TemporaryDirectory(prefix="faceweave-load-")
    if args.url:
        base, key = args.url.rstrip("/"), args.key
        if not key:
            ap.error("--key (or FACEWEAVE_KEY) is required with --url")
    else:
        base, key, server, thread = _start_server(Path(tmp.name), args.sync_concurrency)

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()
    stop_at = time.monotonic() + args.seconds

    def client() -> None:
        with httpx.Client(base_url=base, timeout=120, headers={"Authorization": f"Bearer {key}"}) as c:
            while time.monotonic() < stop_at:
                files = [("sources", ("s.png", source, "image/png")), ("target", ("t.png", target, "image/png"))]
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
    threads = [threading.Thread(target=client) for _ in range(args.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.monotonic() - t_start
    if server is not None:
        server.should_exit = True  # type: ignore[attr-defined]
        assert thread is not None
        thread.join(30)
    tmp.cleanup()

    lat = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 1) if lat else None

    report = {
        "clients": args.clients, "seconds": round(wall, 1), "image": f"{args.size}px", "ok": len(lat),
        "errors": errors, "throughput_rps": round(len(lat) / wall, 2), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
        "mean_ms": round(statistics.fmean(lat) * 1000, 1) if lat else None,
        "server_sync_slots": None if args.url else args.sync_concurrency, "cpus": os.cpu_count(),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print(f"| {args.clients} | {args.size}px | {report['seconds']} s | {report['ok']} | {sum(errors.values())} | "
          f"{report['throughput_rps']} | {report['p50_ms']} | {report['p99_ms']} |")  # fmt: skip
    return 0 if lat and not errors else 1


if __name__ == "__main__":
    sys.exit(main())
