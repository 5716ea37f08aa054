"""The queue metrics (backlog age, frames per second) read from a real store, and their absence without one."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from faceweave.serve.metrics import ServiceMetrics
from faceweave.serve.store import NewJob, SqlJobStore


def _samples(metrics: ServiceMetrics) -> dict[str, float]:
    text = metrics.render().decode()
    return {s.name: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if not s.labels}


def test_backlog_age_and_fps_follow_the_store(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    now = {"t": 0.0}
    metrics = ServiceMetrics(store.counts_by_state, lambda: 0, store.queue_stats, clock=lambda: now["t"])

    now["t"] = 1e9
    empty = _samples(metrics)
    assert empty["faceweave_queue_oldest_age_seconds"] == 0.0  # nothing waits
    assert empty["faceweave_jobs_fps"] == 0.0

    first = store.create_job(NewJob("t", {}, ["s"], "a", "video", 1))
    store.create_job(NewJob("t", {}, ["s"], "b", "video", 1))
    now["t"] = first.created_at + 42.5
    assert _samples(metrics)["faceweave_queue_oldest_age_seconds"] == 42.5  # the oldest one, not the newest

    claimed = store.claim_next()
    assert claimed is not None and claimed.id == first.id
    store.update_progress(claimed.id, frames_done=10, frames_total=100, fps=12.5, eta_s=7.0, stage="swap")
    second = store.claim_next()
    assert second is not None
    store.update_progress(second.id, frames_done=1, frames_total=100, fps=3.0, eta_s=30.0, stage="swap")
    after = _samples(metrics)
    assert after["faceweave_queue_oldest_age_seconds"] == 0.0  # both running: the backlog is empty again
    assert after["faceweave_jobs_fps"] == 15.5
    assert after["faceweave_queue_depth"] == 0.0
    store.close()


def test_without_queue_stats_the_gauges_are_absent(tmp_path: Path) -> None:
    metrics = ServiceMetrics(lambda: {"queued": 3}, lambda: 1)
    samples = _samples(metrics)
    assert samples["faceweave_queue_depth"] == 3.0
    assert "faceweave_queue_oldest_age_seconds" not in samples and "faceweave_jobs_fps" not in samples


def test_a_failing_queue_read_drops_the_gauges_but_not_the_scrape() -> None:
    def broken() -> object:
        raise OSError("database unreachable")

    metrics = ServiceMetrics(lambda: {"queued": 1}, lambda: 0, broken)  # type: ignore[arg-type]
    samples = _samples(metrics)
    assert samples["faceweave_queue_depth"] == 1.0
    assert "faceweave_queue_oldest_age_seconds" not in samples
