"""Video jobs in the service run as segments of a few seconds and report progress while they run (issue 22 #8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import running_app, swap_form

from faceweave.data import media_path

pytestmark = pytest.mark.anyio


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[len("data: "):]) for line in body.splitlines() if line.startswith("data: ")]


@pytest.mark.slow
async def test_video_job_publishes_progress_before_it_finishes(tmp_path: Path, media_bytes: Any) -> None:
    pytest.importorskip("faceweave.pipeline.video")
    # carphone: 120 frames, 4 s; one-second segments → 4 segments, each reporting after every 8-frame batch
    async with running_app(tmp_path, segment_s=1.0) as h:
        headers = h.headers()
        # (batch_size is the operator's: SwapSettings' default, 8 frames)
        files, data = swap_form([("s.jpg", media_bytes("obama.jpg"))],
                                ("t.mp4", media_path("carphone_pristine.mp4").read_bytes()))  # fmt: skip
        r = await h.client.post("/v1/swaps", files=files, data=data, headers=headers)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        # The in-process transport hands the event stream over once it ends (the job finished): every event the
        # server sent while the job ran is in it.
        stream = await h.client.get(f"/v1/swaps/{job_id}/events", headers=headers)
        assert stream.status_code == 200
        events = _events(stream.text)
        assert events[-1]["state"] == "succeeded", events[-1]
        total = events[-1]["frames_total"]
        assert total == 120
        running = [e for e in events if e["state"] == "running" and e["frames_total"]]
        intermediate = sorted({e["frames_done"] for e in running if 0 < e["frames_done"] < total})
        # several distinct steps, not one per segment only: progress moves within a segment (30 frames)
        assert len(intermediate) >= 3, [(e["stage"], e["frames_done"]) for e in events]
        assert any(n % 30 for n in intermediate), intermediate
        assert all(0 <= e["fps"] < 10_000 for e in running)
        job = (await h.client.get(f"/v1/swaps/{job_id}", headers=headers)).json()
        stats = job["stats"]
        assert stats["segments"] == 4 and stats["segments_reused"] == 0 and stats["frames"] == 120, stats
        assert stats["segment_timing"]["first_segment_after_s"] >= 0, stats["segment_timing"]
