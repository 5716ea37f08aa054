"""Import cost A/B: wall time of fresh processes that import faceweave (the CLI, ``swap --help``, the video
pipeline), one tree against another, interleaved in one run (issue 19 goal 4: a cold ``faceweave swap``).

Each tree is put first on ``PYTHONPATH`` (a checkout or ``git archive`` copy of the package); the order within each
repeat alternates. Prints the medians and the ratio B/A.

    mkdir /tmp/base && git archive main | tar -x -C /tmp/base
    python benchmarks/import_ab.py /tmp/base "$PWD" --repeats 6
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = {"swap --help": ["-m", "faceweave.cli", "swap", "--help"],
            "import faceweave.cli": ["-c", "import faceweave.cli"],
            "import faceweave.pipeline.video": ["-c", "import faceweave.pipeline.video"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("tree_a")
    ap.add_argument("tree_b")
    ap.add_argument("--repeats", type=int, default=6)
    args = ap.parse_args()
    trees = [("A", args.tree_a), ("B", args.tree_b)]
    times: dict[tuple[str, str], list[float]] = {(c, t): [] for c in COMMANDS for t, _ in trees}
    for rep in range(args.repeats):
        for name, argv in COMMANDS.items():
            for tag, path in trees if rep % 2 == 0 else trees[::-1]:
                env = dict(os.environ, PYTHONPATH=path)
                t0 = time.perf_counter()
                subprocess.run([sys.executable, *argv], env=env, cwd="/", stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, check=True)
                times[(name, tag)].append(time.perf_counter() - t0)
    for name in COMMANDS:
        a, b = (statistics.median(times[(name, t)]) * 1000 for t in ("A", "B"))
        print(f"{name}: A {a:.0f} ms, B {b:.0f} ms, B/A {b / a:.3f} (medians of {args.repeats})")


if __name__ == "__main__":
    main()
