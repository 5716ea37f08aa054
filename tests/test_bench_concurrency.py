"""The ``faceweave bench`` rows for many jobs on one device (issue 19 goal 3), small and on the CPU: not timed; they
check that the rows run K jobs / C clients through the service's executor and report consistent figures."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("sqlalchemy")
pytest.importorskip("fsspec")


@pytest.mark.slow
def test_k_jobs_and_sync_client_rows(tmp_path: Path) -> None:
    from faceweave.bench import synthesize_video
    from faceweave.bench_concurrency import k_jobs_rows, sync_client_rows
    from faceweave.data import media_path

    clip = synthesize_video(tmp_path / "clip.mp4", width=192, height=144, seconds=0.5)
    rows = k_jobs_rows(clip, media_path("astronaut.png"), [1, 2], device="cpu", crf=23, preset="ultrafast",
                       frames=15, log=lambda s: None)
    assert set(rows) == {"k1", "k2"}
    for r in rows.values():
        assert r["aggregate_fps"] > 0 and r["plain_aggregate_fps"] > 0
        assert r["ratio_to_plain"] == pytest.approx(r["aggregate_fps"] / r["plain_aggregate_fps"], rel=0.02)
    sync = sync_client_rows(media_path("astronaut.png"), media_path("grace_hopper.jpg"), [1, 3], device="cpu",
                            slots=2, requests_per_client=2, log=lambda s: None)
    assert sync["clients_1"]["requests"] == 2 and sync["clients_3"]["requests"] == 6
    for r in sync.values():
        assert r["throughput_rps"] > 0 and 0 < r["p50_ms"] <= r["p95_ms"]
