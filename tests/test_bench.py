"""``faceweave bench`` on the CPU: one small run through every part of the report (the GPU rows run on the device).

Not a timed test: it checks that the command synthesises its input, measures plain transcode and the swap on the
same file, and reports what it measured (fps, ratios, stage times) consistently, as a table and as JSON.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest


def _rounding_slack(fps: float, plain: float) -> float:
    """How far fps/plain, both printed to 0.1, can be from the ratio the report computed unrounded (and printed
    to 0.001): on a slow, loaded machine fps is small and its rounding alone moves the ratio by percents."""
    return 0.05 / plain + 0.05 * fps / plain**2 + 6e-4


@pytest.mark.slow
def test_bench_cpu_report(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [sys.executable, "-m", "faceweave.cli", "bench", "--device", "cpu", "--size", "320x240", "--seconds", "2",
         "--workers", "2", "--batch-sizes", "2", "--cpu-frames", "2", "--repeats", "2", "--no-compile",
         "--json", str(out)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["input"]["width"] == 320 and report["input"]["frames"] == 60 and report["input"]["audio"]
    plain = report["plain_transcode_fps"]
    assert plain["decode_only"] > 0 and plain["single"] > 0 and plain["segments_x2"] > 0
    row = report["face_work_ms_per_frame"]["cpu_fp32"]["batch_2"]
    assert row["faces_per_frame"] == 1.0  # the synthesised clip shows one face in every frame
    assert 0 < row["detect"] < row["total"] and row["landmarks"] > 0 and row["swap_blend"] > 0
    # the video path scans the small-face tiles once in RECALL_EVERY frames (issue 19: recall passes)
    whole = row["detect_whole_view"]
    assert row["video_path"] == pytest.approx(whole / 5 + (row["detect"] - whole) / 30 + row["landmarks"]
                                              + row["swap_blend"], abs=3e-3)
    e2e = report["end_to_end"]["cpu"]
    assert e2e["frames"] == 60 and e2e["faces_swapped"] > 0
    # the report rounds ratios to 3 decimals: an absolute tolerance for small ratios
    assert e2e["ratio_to_plain_segments"] == pytest.approx(e2e["fps"] / plain["segments_x2"],
                                                           abs=_rounding_slack(e2e["fps"], plain["segments_x2"]))
    best = max(plain["single"], plain["segments_x2"])
    assert e2e["ratio_to_best_plain"] == pytest.approx(e2e["fps"] / best, abs=_rounding_slack(e2e["fps"], best))
    assert "| cpu_fp32 | 2 |" in proc.stdout  # the printed table has the measured row
    marking = report["marking_ms_per_1080p_frame"]  # the issue-24 bench row: the watermark's cost per frame
    assert marking["video_chroma_cpu"] > 0 and marking["image_rgb_cpu"] > 0 and marking["pattern_once_per_video"] > 0
    assert "frame_float32_gpu" not in marking  # --device cpu: no GPU row
    assert "| video_chroma_cpu |" in proc.stdout
