"""Segment records (revision 0003) on SQLite: a finished segment is never started or finished again."""

from __future__ import annotations

from pathlib import Path

import pytest

from faceweave.serve.segment_store import SqlSegmentStore
from faceweave.serve.store import SqlJobStore


def _plan(n: int) -> list[dict[str, object]]:
    return [{"index": i, "start_pts": i * 10**10, "end_pts": (i + 1) * 10**10, "frames": 15, "keyframe_aligned": True}
            for i in range(n)]  # fmt: skip  (pts past 2**31: BIGINT on PostgreSQL)


def test_segment_records_keep_finished_segments_finished(tmp_path: Path) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        segs = SqlSegmentStore(store.engine)
        first = segs.save_plan("j1", _plan(3))
        assert [s.state for s in first] == ["pending"] * 3 and first[2].end_pts == 3 * 10**10
        assert [s.index for s in segs.save_plan("j1", _plan(5))] == [0, 1, 2]  # the first plan wins
        assert segs.start("j1", 0, "a0", key="k-a0")
        segs.release("j1", 0, key="k-a0")  # its actor died
        assert segs.start("j1", 0, "a1", key="k0")
        assert segs.finish("j1", 0, result_key="k0", frames=15, stats={"frames_with_faces": 15})
        assert not segs.start("j1", 0, "a2", key="k-a2")  # done: never started again
        assert not segs.finish("j1", 0, result_key="late", frames=15, stats={})  # a late duplicate changes nothing
        segs.release("j1", 0, key="k0")
        s0 = segs.segments("j1")[0]
        assert (s0.state, s0.attempts, s0.completions, s0.worker, s0.result_key) == ("done", 2, 1, "a1", "k0")
        assert s0.stats == {"frames_with_faces": 15} and s0.plan()["frames"] == 15
        segs.delete("j1")
        assert segs.segments("j1") == []
    finally:
        store.close()


def test_transitions_retried_after_an_unknown_outcome_count_once(tmp_path: Path) -> None:
    """The connection can die after COMMIT reached the server: the transition is then run again. The retry must
    recognise its own committed write (the attempt's key) and count nothing twice."""
    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        segs = SqlSegmentStore(store.engine)
        segs.save_plan("j1", _plan(2))
        assert segs.start("j1", 0, "a0", key="k0") and segs.start("j1", 0, "a0", key="k0")  # start, then its retry
        assert segs.finish("j1", 0, result_key="k0", frames=15, stats={})
        assert segs.finish("j1", 0, result_key="k0", frames=15, stats={})  # the retry: True, and no 2nd completion
        s0 = segs.segments("j1")[0]
        assert (s0.state, s0.attempts, s0.completions, s0.result_key) == ("done", 1, 1, "k0")
        # an attempt whose start record is not there (a lost write, or a job taken over): its finish counts it
        assert segs.finish("j1", 1, result_key="k1", frames=15, stats={})
        s1 = segs.segments("j1")[1]
        assert (s1.state, s1.attempts, s1.completions, s1.result_key) == ("done", 1, 1, "k1")
        # a stale release (an attempt that lost its actor after another attempt took the segment) changes nothing
        segs.save_plan("j2", _plan(1))
        assert segs.start("j2", 0, "a0", key="old") and segs.start("j2", 0, "a1", key="new")
        segs.release("j2", 0, key="old")
        assert segs.segments("j2")[0].state == "running"
    finally:
        store.close()


def test_transitions_retry_until_they_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transition whose database is unreachable for a moment is retried, not dropped nor reported done."""
    from sqlalchemy import event
    from sqlalchemy.exc import OperationalError

    import faceweave.serve.resilience as resilience

    monkeypatch.setattr(resilience.time, "sleep", lambda _s: None)
    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        segs = SqlSegmentStore(store.engine)
        segs.save_plan("j1", _plan(1))
        failures = [2]

        def down(*_: object) -> None:  # the first two transactions' COMMIT fails as if the server went away
            if failures[0]:
                failures[0] -= 1
                raise OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))

        event.listen(store.engine, "commit", down)
        assert segs.start("j1", 0, "a0", key="k0")
        assert failures == [0]
        event.remove(store.engine, "commit", down)
        s0 = segs.segments("j1")[0]
        assert (s0.state, s0.attempts, s0.result_key) == ("running", 1, "k0")
    finally:
        store.close()


def test_requeue_stale_leaves_live_jobs_alone(tmp_path: Path) -> None:
    import time

    from faceweave.serve.store import NewJob

    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    try:
        for _ in range(2):
            store.create_job(NewJob("t", {}, ["s"], "x", "video", 1))
        a, b = store.claim_next(), store.claim_next()
        assert a is not None and b is not None
        assert store.requeue_stale(time.time() - 60) == 0  # both reported just now
        assert store.requeue_stale(time.time() + 1, exclude={a.id}) == 1  # b's executor went silent
        assert store.get_job(a.id).state.value == "running"  # type: ignore[union-attr]
        assert store.get_job(b.id).state.value == "queued"  # type: ignore[union-attr]
    finally:
        store.close()
