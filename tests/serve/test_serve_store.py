"""Job store (migrations, atomic claims, recovery) and the in-process executor with a trivial job function.

The ``check_*`` helpers take a database URL: the tests here run them on SQLite, ``test_serve_backends.py`` runs the
same helpers on a real PostgreSQL server.
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import pytest

from faceweave.errors import NoFaceInTarget
from faceweave.progress import Progress
from faceweave.serve.executor import InProcessExecutor, JobContext, JobOutcome, ProgressHub
from faceweave.serve.storage import FsspecStorage
from faceweave.serve.store import JobState, NewJob, SqlJobStore


def _new(store: SqlJobStore, storage: FsspecStorage, tmp: Path, n: int = 1) -> list[str]:
    ids = []
    for i in range(n):
        src = tmp / f"in{i}.bin"
        src.write_bytes(b"x" * 10)
        storage.upload(src, f"t/{i}/target.png")
        storage.upload(src, f"t/{i}/source_0.png")
        ids.append(store.create_job(NewJob("t", {}, [f"t/{i}/source_0.png"], f"t/{i}/target.png", "image", 20)).id)
    return ids


def sqlite_url(tmp: Path) -> str:
    return f"sqlite:///{tmp / 'db.sqlite'}"


def check_migrations_are_idempotent_and_claims_are_exclusive(url: str, tmp_path: Path) -> None:
    store = SqlJobStore(url)
    storage = FsspecStorage(f"file://{tmp_path / 'media'}")
    ids = _new(store, storage, tmp_path, 20)
    SqlJobStore(url).close()  # a second startup migrates nothing and loses nothing
    claimed: list[str] = []

    def claim() -> None:
        while (job := store.claim_next()) is not None:
            claimed.append(job.id)

    threads = [threading.Thread(target=claim) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(claimed) == sorted(ids)  # every job claimed exactly once
    assert store.counts_by_state()["running"] == 20
    assert store.cancel(ids[0]) and not store.finish(ids[0], result_key="k", result_bytes=1, faces_swapped=1,
                                                      kind="image")  # fmt: skip
    assert store.get_job(ids[0]).state == JobState.cancelled  # type: ignore[union-attr]
    restarted = SqlJobStore(url)
    assert restarted.requeue_unfinished() == 19
    assert restarted.counts_by_state() == {"queued": 19, "running": 0, "succeeded": 0, "failed": 0, "cancelled": 1}
    store.close()
    restarted.close()


def test_migrations_are_idempotent_and_claims_are_exclusive(tmp_path: Path) -> None:
    check_migrations_are_idempotent_and_claims_are_exclusive(sqlite_url(tmp_path), tmp_path)


def check_quota_is_atomic(url: str, tmp_path: Path) -> None:
    """20 submits of one tenant released together against a quota of 4 live jobs: exactly 4 are inserted (the
    count and the insert are one transaction); the storage quota holds the same way."""
    from faceweave.serve.errors import QuotaExceeded
    from faceweave.serve.store import Quota

    store = SqlJobStore(url)
    start = threading.Barrier(20)
    outcomes: list[str] = []

    def submit(tenant: str, quota: Quota, stored: int) -> None:
        start.wait()
        try:
            store.create_job(NewJob(tenant, {}, ["s"], "t", "image", stored), quota=quota)
            outcomes.append("ok")
        except QuotaExceeded:
            outcomes.append("quota")

    try:
        for tenant, quota, stored in (("a", Quota(4, 10**12), 1), ("b", Quota(1000, 1000), 100)):
            outcomes.clear()
            threads = [threading.Thread(target=submit, args=(tenant, quota, stored)) for _ in range(20)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(60)
            assert sorted(outcomes) == ["ok"] * 10 + ["quota"] * 10 if tenant == "b" else ["ok"] * 4 + ["quota"] * 16
            assert store.count_active(tenant) == (4 if tenant == "a" else 10)
    finally:
        store.close()


def test_quota_is_atomic(tmp_path: Path) -> None:
    check_quota_is_atomic(sqlite_url(tmp_path), tmp_path)


def check_job_lifecycle(url: str, tmp_path: Path) -> None:
    """create → claim → progress → succeed, straight on the store; every field lands and reads back."""
    store = SqlJobStore(url)
    storage = FsspecStorage(f"file://{tmp_path / 'media'}")
    (job_id,) = _new(store, storage, tmp_path, 1)
    job = store.get_job(job_id, tenant="t")
    assert job is not None and job.state == JobState.queued and job.source_keys == ["t/0/source_0.png"]
    assert store.get_job(job_id, tenant="other") is None
    claimed = store.claim_next()
    assert claimed is not None and claimed.id == job_id and claimed.state == JobState.running
    assert claimed.attempts == 1 and claimed.started_at is not None and store.claim_next() is None
    store.update_progress(job_id, frames_done=3, frames_total=10, fps=2.5, eta_s=2.8, stage="swap")
    job = store.get_job(job_id)
    assert job is not None and (job.frames_done, job.frames_total, job.fps, job.eta_s, job.stage) == (
        3, 10, 2.5, 2.8, "swap")  # fmt: skip
    assert store.finish(job_id, result_key="t/0/result.png", result_bytes=5, faces_swapped=1, kind="image",
                        stats={"segments_reused": 0})  # fmt: skip
    job = store.get_job(job_id)
    assert job is not None and job.state == JobState.succeeded and job.result_key == "t/0/result.png"
    assert (job.frames_done, job.stored_bytes, job.faces_swapped, job.stats) == (10, 25, 1, {"segments_reused": 0})
    assert not store.cancel(job_id) and store.count_active("t") == 0 and store.stored_bytes("t") == 25
    assert [j.id for j in store.list_jobs("t", JobState.succeeded, 10, 0)[0]] == [job_id]
    assert [j.id for j in store.finished_before(job.finished_at + 1)] == [job_id]  # type: ignore[operator]
    store.close()


def test_job_lifecycle(tmp_path: Path) -> None:
    check_job_lifecycle(sqlite_url(tmp_path), tmp_path)


def check_executor_runs_fails_and_survives(url: str, tmp_path: Path) -> None:
    store = SqlJobStore(url)
    storage = FsspecStorage(f"file://{tmp_path / 'media'}")
    ok_id, face_id, bug_id = _new(store, storage, tmp_path, 3)
    finished: list[str] = []
    done = threading.Event()

    def job_function(ctx: JobContext) -> JobOutcome:
        ctx.progress(Progress(stage="swap", frames_done=1, frames_total=2))
        if ctx.job.id == face_id:
            raise NoFaceInTarget("no face found in the target image", hint="use another image")
        if ctx.job.id == bug_id:
            raise RuntimeError("a bug")
        shutil.copy(ctx.target, ctx.output)
        return JobOutcome(ctx.output, "image", 1, {})

    def on_finished(job: object) -> None:
        finished.append(job.id)  # type: ignore[attr-defined]
        if len(finished) == 3:
            done.set()

    ex = InProcessExecutor(store, storage, tmp_path / "work", slots=2, hub=ProgressHub(), job_function=job_function,
                           on_finished=on_finished, poll_interval_s=0.05)  # fmt: skip
    ex.start()
    try:
        assert done.wait(30)
    finally:
        ex.stop()
    ok, face, bug = (store.get_job(i) for i in (ok_id, face_id, bug_id))
    assert ok is not None and ok.state == JobState.succeeded and ok.result_key and storage.exists(ok.result_key)
    assert face is not None and face.state == JobState.failed
    assert (face.error_type, face.error_code) == ("NoFaceInTarget", "no_face_in_target")
    assert "no face found" in (face.error_message or "")
    assert bug is not None and bug.state == JobState.failed and bug.error_code == "internal_error"
    assert "a bug" in (bug.error_message or "")
    assert not (tmp_path / "work" / ok_id).exists()  # work folders go once a job is final
    store.close()


def test_executor_runs_fails_and_survives(tmp_path: Path) -> None:
    check_executor_runs_fails_and_survives(sqlite_url(tmp_path), tmp_path)


def check_shutdown_leaves_running_job_for_recovery(url: str, tmp_path: Path) -> None:
    store = SqlJobStore(url)
    storage = FsspecStorage(f"file://{tmp_path / 'media'}")
    (job_id,) = _new(store, storage, tmp_path, 1)
    started = threading.Event()

    def slow(ctx: JobContext) -> JobOutcome:
        started.set()
        while True:
            ctx.progress(Progress(stage="swap", frames_done=0, frames_total=None))
            time.sleep(0.01)

    ex = InProcessExecutor(store, storage, tmp_path / "work", slots=1, hub=ProgressHub(), job_function=slow,
                           poll_interval_s=0.05)  # fmt: skip
    ex.start()
    assert started.wait(10)
    ex.stop()
    assert store.get_job(job_id).state == JobState.running  # type: ignore[union-attr]
    restarted = SqlJobStore(url)
    assert restarted.requeue_unfinished() == 1
    assert restarted.get_job(job_id).state == JobState.queued  # type: ignore[union-attr]
    store.close()
    restarted.close()


def test_shutdown_leaves_running_job_for_recovery(tmp_path: Path) -> None:
    check_shutdown_leaves_running_job_for_recovery(sqlite_url(tmp_path), tmp_path)


@pytest.mark.parametrize("slots", [0])
def test_executor_needs_a_slot(tmp_path: Path, slots: int) -> None:
    store = SqlJobStore(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(ValueError, match="at least one slot"):
        InProcessExecutor(store, FsspecStorage(f"file://{tmp_path}"), tmp_path, slots=slots, hub=ProgressHub())


def test_progress_hub_delivers_thread_events_to_async_subscribers() -> None:
    import asyncio

    hub = ProgressHub()

    async def main() -> list[dict[str, object]]:
        queue = hub.subscribe("job1")
        other = hub.subscribe("job2")

        def worker() -> None:
            for i in range(3):
                hub.publish("job1", {"state": "running", "frames_done": i, "frames_total": 3})

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        got = [await asyncio.wait_for(queue.get(), 5) for _ in range(3)]
        assert other.empty()
        hub.unsubscribe("job1", queue)
        hub.publish("job1", {"state": "succeeded"})  # nobody listens any more: dropped, no error
        return got

    got = asyncio.run(main())
    assert [e["frames_done"] for e in got] == [0, 1, 2]


def check_upgrade_from_first_revision_keeps_jobs(url: str) -> None:
    from alembic import command
    from alembic.config import Config

    from faceweave.serve.store import MIGRATIONS_DIR, make_engine

    engine = make_engine(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
        conn.exec_driver_sql(
            "INSERT INTO jobs (id, tenant, state, created_at, updated_at, settings_json, source_keys_json, target_key)"
            " VALUES ('old', 't', 'succeeded', 1.0, 1.0, '{}', '[]', 'k')"
        )
    engine.dispose()
    store = SqlJobStore(url)  # upgrades to head at startup
    job = store.get_job("old")
    assert job is not None and job.state == JobState.succeeded and job.stats == {}
    store.close()


def test_upgrade_from_first_revision_keeps_jobs(tmp_path: Path) -> None:
    check_upgrade_from_first_revision_keeps_jobs(sqlite_url(tmp_path))
