"""Where the single-process video stream's time goes, per thread, and who holds the GIL (py-spy, sampled).

cProfile sees one thread and slows Python code far more than C code, so it cannot say whether the stream is bound
by the GPU, by one thread, or by the interpreter lock that its threads share. This script synthesises a clip, warms an
engine up with a one-second job, then runs one full job while ``py-spy record --gil --threads`` samples this very
process (only the thread holding the GIL is sampled, so each thread's sample share is its share of the lock). It
prints, per thread: its share of the GIL, and the functions (faceweave's and the leaves) where it held it.

    pip install py-spy   # a static binary; needs ptrace rights on the process (root, or CAP_SYS_PTRACE)
    python benchmarks/thread_profile.py --seconds 20 --batch 32 --out thread_profile.txt
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from faceweave.bench import synthesize_video
from faceweave.bench_clips import synthesize_photo_video
from faceweave.data import media_path
from faceweave.pipeline.engine import SwapEngine
from faceweave.pipeline.video import swap_video
from faceweave.settings import SwapSettings


def summarise(raw: Path, wall_s: float, rate: int, top: int) -> list[str]:
    """Per thread: GIL-held samples (share of the wall time), top faceweave frames (inclusive) and leaves (self)."""
    per_thread: collections.Counter[str] = collections.Counter()
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = stack.split(";")
        thread = next((f for f in frames if f.startswith("thread ")), "thread ?")
        per_thread[thread] += count
        calls = [f for f in frames if not f.startswith(("thread ", "process "))]
        seen = set()
        for f in calls:
            if "faceweave" in f and f not in seen:
                seen.add(f)
                inclusive[thread][f] += count
        if calls:
            leaves[thread][calls[-1]] += count
    total = sum(per_thread.values())
    out = [f"{total} samples at {rate} Hz over {wall_s:.2f} s: "
           f"{100 * total / max(rate * wall_s, 1):.0f} % of the wall time"]
    for thread, n in per_thread.most_common():
        out.append(f"\n{thread}: {n} samples = {100 * n / max(rate * wall_s, 1):.1f} % of the wall time")
        out.append("  faceweave frames (inclusive):")
        out += [f"    {c:6d}  {f}" for f, c in inclusive[thread].most_common(top)]
        out.append("  leaves (self):")
        out += [f"    {c:6d}  {f}" for f, c in leaves[thread].most_common(top)]
    return out


def find_py_spy() -> str:
    """The py-spy binary, or exit with how to install it."""
    spy = shutil.which("py-spy")
    if spy is None:
        raise SystemExit("py-spy is not installed (pip install py-spy)")
    return spy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--size", default="1920x1080")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--dtype", default="float16")
    ap.add_argument("--content", choices=("synth", "photo"), default="synth")
    ap.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    ap.add_argument("--all-threads", action="store_true",
                    help="sample every running thread, not only the one holding the GIL (on the CPU the torch ops "
                         "release the GIL: this shows where each thread computes)")
    ap.add_argument("--idle", action="store_true",
                    help="with --all-threads: sample waiting threads too (lock, GPU and queue waits show as wall time)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--out", type=Path, default=None, help="also write the report here (and the raw stacks beside)")
    args = ap.parse_args()
    spy = find_py_spy()
    w, h = (int(v) for v in args.size.split("x"))
    settings = SwapSettings(device=args.device, dtype=args.dtype, batch_size=args.batch, workers=1)
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        make = synthesize_photo_video if args.content == "photo" else synthesize_video
        clip = make(tmp / "in.mp4", width=w, height=h, seconds=args.seconds)
        engine = SwapEngine(settings)
        source = [media_path("astronaut.png")]
        swap_video(source, clip, tmp / "warm.mp4", settings.model_copy(update={"trim_end": "1"}), engine=engine)
        raw = (args.out.with_suffix(".raw.txt") if args.out else tmp / "spy.raw.txt")
        mode = (["--idle"] if args.idle else []) if args.all_threads else ["--gil"]
        proc = subprocess.Popen([spy, "record", "--pid", str(os.getpid()), *mode, "--threads", "--rate",
                                 str(args.rate), "--format", "raw", "--output", str(raw), "--nonblocking"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(1.0)  # let py-spy attach before the job starts
        t0 = time.perf_counter()
        result = swap_video(source, clip, tmp / "out.mp4", settings, engine=engine)
        wall = time.perf_counter() - t0
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        lines = [f"{result.frames} frames in {wall:.2f} s = {result.frames / wall:.1f} fps on {engine.device}, "
                 f"batch {args.batch}, {args.dtype}, {args.content} clip",
                 f"stream timing (s): {result.stats.get('stream_timing')}"]
        if raw.exists():
            lines.append("sampled: " + (("every thread, waiting ones too" if args.idle else "every running thread")
                                        if args.all_threads else "the GIL holder only"))
            lines += summarise(raw, wall + 1.0, args.rate, args.top)
        else:
            lines.append(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
    report = "\n".join(lines)
    print(report)
    if args.out:
        args.out.write_text(report)


if __name__ == "__main__":
    main()
