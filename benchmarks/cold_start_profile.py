"""Where a cold ``swap_video`` process spends the time before its first swapped frame (issue 19 goal 4: ≤ 3 s on
the GPU), sampled by py-spy over the whole fresh process, idle threads included (so waits on the GPU, on disk and
on locks count as wall time).

It synthesises a short clip, then runs ``py-spy record --idle --threads`` on the same child process that
``faceweave bench --cold-start`` times (:func:`faceweave.bench_clips.cold_start`) and prints: the time to the first
swapped frame, and per thread the faceweave functions (inclusive) and leaves where the samples fell.

    pip install py-spy   # needs ptrace rights on the child (root, or CAP_SYS_PTRACE)
    python benchmarks/cold_start_profile.py --device cuda --out cold_profile.txt
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from faceweave.bench import synthesize_video
from faceweave.bench_clips import _MARK
from faceweave.data import media_path

sys.path.insert(0, str(Path(__file__).parent))
from thread_profile import find_py_spy, summarise  # noqa: E402  (a sibling script, not a package)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="auto")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warm-up", default="auto", choices=("auto", "full", "deferred"),
                    help="swap_video(warm_up=…): auto is what `faceweave swap` does (GPU: deferred)")
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--out", type=Path, default=None, help="also write the report here (and the raw stacks beside)")
    args = ap.parse_args()
    spy = find_py_spy()
    width, height = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        clip = synthesize_video(tmp / "clip.mp4", width=width, height=height, seconds=args.seconds)
        raw = args.out.with_suffix(".raw.txt") if args.out else tmp / "cold.raw.txt"
        child = [sys.executable, "-m", "faceweave.bench_clips", str(media_path("astronaut.png")), str(clip),
                 str(tmp / "out.mp4"), args.device, args.dtype, str(args.batch), str(args.seconds), args.warm_up]
        t0 = time.time()
        proc = subprocess.run([spy, "record", "--idle", "--threads", "--rate", str(args.rate), "--format", "raw",
                               "--output", str(raw), "--", *child], capture_output=True, text=True, check=False)
        wall = time.time() - t0
        first = next((float(line[len(_MARK):]) for line in proc.stdout.splitlines() if line.startswith(_MARK)),
                     None)
        lines = [f"cold child under py-spy: first swapped frame at "
                 f"{'?' if first is None else f'{first - t0:.2f}'} s, process {wall:.2f} s, rc {proc.returncode}"]
        if proc.returncode:
            lines.append(proc.stderr[-2000:])
        if raw.exists():
            lines += summarise(raw, wall, args.rate, args.top)
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report + "\n")


if __name__ == "__main__":
    main()
