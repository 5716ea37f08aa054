"""Where one ``POST /v1/swaps:sync`` request's wall time goes, stage by stage (a benchmark, not a test).

Starts the service in this process (as ``load_sync.py`` does), wraps the functions each stage runs with timers,
sends ``--requests`` requests one after another from one client and prints, per stage, the median milliseconds per
request (and a Markdown table). Stages nest: the indented ones are parts of the line above them; ``other`` is the
rest of the client's wall time (HTTP, thread hops, the route's own code).

    python benchmarks/sync_stages.py --size 1920 --requests 8 [--target obama2.jpg] [--format png|jpg] [--device cpu]

A stage whose function is not found in the tree (renamed, moved) is left out of the table, never guessed.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from faceweave.data import media_path

# (label, module, attribute[, class attribute]), parents before children; indentation is the nesting in the table
STAGES: list[tuple[str, str, str]] = [
    ("read_inputs (multipart parse + spool + probe)", "faceweave.serve.routes.swaps", "read_inputs"),
    ("  probe_media", "faceweave.serve.inputs", "probe_media"),
    ("moderation hook", "faceweave.serve.routes.swaps", "moderate"),
    ("_run_sync_job (request thread)", "faceweave.serve.routes.swaps", "_run_sync_job"),
    ("  decode (read_image)", "faceweave.media.image", "read_image"),
    ("  batcher.submit (window + forwards)", "faceweave.pipeline.batcher", "WindowBatcher.submit"),
    ("    swap_image_batch (batch thread)", "faceweave.pipeline.image_batch", "swap_image_batch"),
    ("    swap_image_batch_on_device (batch thread)", "faceweave.pipeline.image_batch", "swap_image_batch_on_device"),
    ("      canvas (_stack)", "faceweave.pipeline.image_batch", "_stack"),
    ("      analyze", "faceweave.pipeline.engine", "SwapEngine.analyze"),
    ("      prepare_source", "faceweave.pipeline.engine", "SwapEngine.prepare_source"),
    ("      swap", "faceweave.pipeline.engine", "SwapEngine.swap"),
    ("      to_uint8", "faceweave.pipeline.image_batch", "to_uint8"),
    ("  to_host (request thread)", "faceweave.pipeline.image_batch", "DeviceOutcome.to_host"),
    ("  finish_image (writes the file)", "faceweave.pipeline.image", "finish_image"),
    ("  finished_image_bytes (in memory)", "faceweave.pipeline.image", "finished_image_bytes"),
    ("    ingredients (sha256 of inputs)", "faceweave.provenance.c2pa", "Ingredient.of_file"),
    ("    watermark", "faceweave.provenance.mark", "embed_watermark"),
    ("    encode", "faceweave.media.image", "encode_image"),
    ("    signing identity (key load)", "faceweave.provenance.mark", "signing_identity"),
    ("    C2PA thumbnail", "faceweave.provenance.mark", "claim_thumbnail"),
    ("    C2PA sign", "faceweave.provenance.mark", "sign_bytes"),
    ("    atomic write", "faceweave.media.image", "atomic_write_bytes"),
]


class Clock:
    """Seconds spent per stage since the last :meth:`take` (summed over threads and calls)."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.lock = threading.Lock()

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        import inspect

        if inspect.iscoroutinefunction(fn):
            async def timed_async(*args: Any, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self.add(label, time.perf_counter() - t0)

            return timed_async

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(label, time.perf_counter() - t0)

        return timed

    def add(self, label: str, seconds: float) -> None:
        with self.lock:
            self.totals[label] += seconds

    def take(self) -> dict[str, float]:
        with self.lock:
            out, self.totals = dict(self.totals), defaultdict(float)
        return out


def install(clock: Clock) -> list[str]:
    """Wrap every stage found; returns the labels installed."""
    found = []
    for label, module_name, attr in STAGES:
        module = importlib.import_module(module_name)
        owner: Any = module
        name = attr
        if "." in attr:
            cls_name, name = attr.split(".", 1)
            owner = getattr(module, cls_name, None)
        if owner is None or name not in vars(owner):
            continue
        original = vars(owner)[name]
        if isinstance(original, classmethod):
            setattr(owner, name, classmethod(clock.wrap(label, original.__func__)))
        else:
            setattr(owner, name, clock.wrap(label, original))
        found.append(label)
    return found


def _image(name: str, size: int, fmt: str) -> bytes:
    with Image.open(media_path(name)) as src:
        rgb = src.convert("RGB")
    scale = size / max(rgb.size)
    rgb = rgb.resize((max(1, round(rgb.width * scale)), max(1, round(rgb.height * scale))), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    rgb.save(buf, "PNG" if fmt == "png" else "JPEG", **({} if fmt == "png" else {"quality": 92}))
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1920, help="longest side of the target (a bundled face scaled)")
    ap.add_argument("--requests", type=int, default=8, help="timed requests (after 2 untimed ones)")
    ap.add_argument("--target", default="astronaut.png",
                    help="bundled target face (astronaut.png: square, 1920²; obama2.jpg: 1920×1002 at --size 1920)")
    ap.add_argument("--format", choices=("png", "jpg"), default="png", help="the target's (and so the output's) format")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--sync-batch", type=int, default=16)
    args = ap.parse_args(argv)

    clock = Clock()
    labels = install(clock)  # before the app is built: the batch runner binds its function at creation
    sys.path.insert(0, str(Path(__file__).parent))
    from load_sync import _start_server

    tmp = tempfile.TemporaryDirectory(prefix="faceweave-stages-")
    base, key, server, thread, _svc = _start_server(Path(tmp.name), 2, args.sync_batch, args.device)
    source = _image("obama.jpg", min(args.size, 512), "png")
    target = _image(args.target, args.size, args.format)
    ctype = "image/png" if args.format == "png" else "image/jpeg"
    files = [("sources", ("s.png", source, "image/png")), ("target", (f"t.{args.format}", target, ctype))]
    rows: list[dict[str, float]] = []
    out_bytes = 0
    with httpx.Client(base_url=base, timeout=300, headers={"Authorization": f"Bearer {key}"}) as c:
        for n in range(args.requests + 2):
            clock.take()
            t0 = time.perf_counter()
            r = c.post("/v1/swaps:sync", files=files, data={"consent": "true"})
            wall = time.perf_counter() - t0
            if r.status_code != 200:
                print(r.status_code, r.text, file=sys.stderr)
                return 1
            out_bytes = len(r.content)
            got = clock.take()
            got["client wall"] = wall
            if n >= 2:
                rows.append(got)
    server.should_exit = True  # type: ignore[attr-defined]
    thread.join(30)  # type: ignore[attr-defined]
    tmp.cleanup()

    def med(label: str) -> float:
        return statistics.median(r.get(label, 0.0) for r in rows) * 1000

    wall = med("client wall")
    top = [lb for lb in labels if not lb.startswith(" ")]
    labels = [lb for lb in labels if any(r.get(lb, 0.0) > 0 for r in rows)]  # found but never called: left out
    report = {
        "target": args.target, "size": args.size, "format": args.format, "requests": len(rows),
        "target_bytes": len(target), "output_bytes": out_bytes, "client_wall_ms_median": round(wall, 1),
        "client_wall_ms_min": round(min(r["client wall"] for r in rows) * 1000, 1),
        "stages_ms_median": {lb.strip(): round(med(lb), 1) for lb in labels},
        "other_ms_median": round(statistics.median(
            r["client wall"] - sum(r.get(lb, 0.0) for lb in top) for r in rows) * 1000, 1),
        "load_average": os.getloadavg(),
    }  # fmt: skip
    print(json.dumps(report, indent=2))
    print(f"\n| stage | ms (median of {len(rows)}) | share |\n|---|---|---|")
    for lb in labels:
        depth = (len(lb) - len(lb.lstrip(" "))) // 2
        print(f"| {'&nbsp;&nbsp;' * depth}{lb.strip()} | {med(lb):.1f} | {med(lb) / wall:.0%} |")
    print(f"| other (HTTP, thread hops, route code) | {report['other_ms_median']} | "
          f"{report['other_ms_median'] / wall:.0%} |")  # fmt: skip
    print(f"| **client wall** | **{wall:.1f}** | |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
