"""Cold start of a video swap, phase by phase (issue 19 goal 4: ``faceweave swap`` on the GPU reaches its first
swapped frame ≤ 3 s after the process starts).

Synthesises the bench clip (:func:`faceweave.bench.synthesize_video`: one face on black, 30 fps), then runs
:func:`faceweave.bench_clips.cold_start` ``--repeats`` times per warm-up mode, interleaved: each run is a fresh
``python`` process doing one ``swap_video`` of the whole clip, and reports when (seconds since it was spawned) it
had its imports done, its engine built and models loaded, its warm-up before the first frame done, its first swapped
frame, its background warm-up ended (``deferred`` only), its job done, and when it exited.

Warm-up modes (``swap_video(warm_up=…)``): ``auto`` is what ``faceweave swap`` does (on the GPU: deferred; on the
CPU: none); ``full`` is the up-front warm-up of every graph before the first frame (what ``auto`` did before issue
19 goal 4); ``deferred`` forces the background warm-up (also on the CPU, for testing).

The first run of the whole script is the only one with cold file caches, and only on a freshly started machine
(torch's libraries, the models and the clip come from disk); later runs read them from the page cache. The table
marks it.

    python benchmarks/cold_start.py --device cuda --size 1920x1080 --seconds 4 --repeats 3 --modes auto,full
    python benchmarks/cold_start.py --device cpu --size 640x360 --seconds 2 --repeats 2 --modes auto,deferred
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

from faceweave.bench import synthesize_video
from faceweave.bench_clips import COLD_PHASES, cold_start
from faceweave.data import media_path

MODES = ("auto", "full", "deferred")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto", help="the swap's dtype (auto: float16 on CUDA)")
    ap.add_argument("--batch", type=int, default=32, help="batch size (32: the GPU bench's)")
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--seconds", type=float, default=4.0, help="clip length; the job swaps all of it")
    ap.add_argument("--repeats", type=int, default=3, help="runs per mode (interleaved)")
    ap.add_argument("--modes", default="auto", help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--full-warm-up", action="store_true", help="same as --modes full")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per child process")
    ap.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = ap.parse_args()
    modes = ["full"] if args.full_warm_up else [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES):
        ap.error(f"--modes: a comma list of {', '.join(MODES)}")
    width, height = (int(v) for v in args.size.lower().split("x"))
    print(f"cold start: {args.size}, {args.seconds:g} s clip, batch {args.batch}, device {args.device}, dtype "
          f"{args.dtype}; {platform.python_version()}, {_torch_line()}", flush=True)
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        clip = synthesize_video(tmp / "clip.mp4", width=width, height=height, seconds=args.seconds)
        for rep in range(args.repeats):
            for mode in modes:
                row = cold_start(media_path("astronaut.png"), clip, tmp / "out.mp4", device=args.device,
                                 dtype=args.dtype, batch_size=args.batch, trim_end=f"{args.seconds:g}", warm_up=mode,
                                 timeout_s=args.timeout)
                row["run"], row["caches"] = len(runs) + 1, "cold?" if not runs else "warm"
                runs.append(row)
                print(f"run {row['run']} ({mode}, rep {rep + 1}): rc {row['returncode']}, first frame "
                      f"{row['first_frame_s']} s, process {row['process_s']} s" +
                      (f", error {row['error']}" if row.get("error") else ""), flush=True)
    print()
    print(table(runs))
    print()
    print(medians(runs, modes))
    print("\nrun 1 ('cold?') is the first process of this script: its file caches (torch's libraries, the models, the "
          "clip) are cold only on a freshly started machine; the medians leave it out when there are later runs.")
    if args.json:
        args.json.write_text(json.dumps(runs, indent=2))


def _torch_line() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA"
    return f"torch {torch.__version__}, {gpu}"


def table(runs: list[dict[str, Any]]) -> str:
    """Markdown: one row per run, one column per phase (seconds since the child was spawned)."""
    keys = [k for k, _ in COLD_PHASES]
    head = ["run", "warm-up (ran)", "caches", *(k[:-2].replace("_", " ") for k in keys), "background"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in runs:
        bg = r.get("background") or {}
        cells = [str(r["run"]), f"{r['warm_up']} ({r.get('warm_up_mode')})", r["caches"],
                 *(_s(r["phases"].get(k)) for k in keys),
                 f"{bg.get('state')}, {bg.get('steps')} steps" if bg else "–"]
        lines.append("| " + " | ".join(cells) + " |")
    legend = "; ".join(f"{k[:-2].replace('_', ' ')}: {what}" for k, what in COLD_PHASES)
    return "\n".join(lines) + f"\n\nseconds since the process was spawned. {legend}."


def medians(runs: list[dict[str, Any]], modes: list[str]) -> str:
    """Per mode, the median of each phase over its runs with warm caches (all its runs if it has no other)."""
    keys = [k for k, _ in COLD_PHASES]
    lines = ["| mode | runs | " + " | ".join(k[:-2].replace("_", " ") for k in keys) + " |",
             "|" + "---|" * (len(keys) + 2)]
    for mode in modes:
        mine = [r for r in runs if r["warm_up"] == mode and r["returncode"] == 0]
        warm = [r for r in mine if r["caches"] == "warm"] or mine
        cells = []
        for k in keys:
            vals = [r["phases"][k] for r in warm if r["phases"].get(k) is not None]
            cells.append(_s(statistics.median(vals)) if vals else "–")
        lines.append(f"| {mode} (median) | {len(warm)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _s(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


if __name__ == "__main__":
    main()
