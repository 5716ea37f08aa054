"""Segment records (revision 0003) on SQLite: a finished segment is never started or finished again."""

from __future__ import annotations

from pathlib import Path

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
        assert segs.start("j1", 0, "a0")
        segs.release("j1", 0)  # its actor died
        assert segs.start("j1", 0, "a1")
        assert segs.finish("j1", 0, result_key="k0", frames=15, stats={"frames_with_faces": 15})
        assert not segs.start("j1", 0, "a2")  # done: never started again
        assert not segs.finish("j1", 0, result_key="late", frames=15, stats={})  # a late duplicate changes nothing
        segs.release("j1", 0)
        s0 = segs.segments("j1")[0]
        assert (s0.state, s0.attempts, s0.completions, s0.worker, s0.result_key) == ("done", 2, 1, "a1", "k0")
        assert s0.stats == {"frames_with_faces": 15} and s0.plan()["frames"] == 15
        segs.delete("j1")
        assert segs.segments("j1") == []
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
