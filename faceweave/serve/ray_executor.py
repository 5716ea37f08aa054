"""The Ray executor: jobs in the SQL store (PostgreSQL), work on GPU actors anywhere in a Ray cluster.

The API process claims queued jobs from the store exactly like :class:`~faceweave.serve.executor.InProcessExecutor`
and runs a light orchestration thread per job; the media work happens on :class:`~faceweave.serve.ray_worker.
SwapWorker` actors (one per GPU, detached and named, so they keep their models warm across API restarts):

- a video job is planned once into keyframe-aligned segments (rows in ``job_segments``), each segment goes to an
  idle actor, lands in object storage under its own key per attempt, and is recorded ``done``; a join on an
  actor concatenates them without re-encoding. An actor that dies (killed, its node gone, a spot pre-emption)
  fails its call: the segment goes back to ``pending`` and another actor takes it. A restarted API resumes the
  job from its records: finished segments are never recomputed;
- image jobs claimed within ``ray_batch_window_s`` of each other go to one actor as one batch.

Progress (frames done in finished and running segments) is written to the job row and published to SSE; the row's
``updated_at`` is the job's heartbeat: a job whose API process died is requeued by any API after
``ray_lease_s`` (:meth:`SqlJobStore.requeue_stale`).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from faceweave.errors import FaceweaveError
from faceweave.result import SEGMENT_COUNTERS
from faceweave.serve.errors import JobCancelled
from faceweave.serve.executor import JobHook, ProgressHub, job_event
from faceweave.serve.logging import job_context
from faceweave.serve.ray_pool import ActorLost, ActorPool
from faceweave.serve.ray_worker import WorkSpec, no_face_error
from faceweave.serve.resilience import RetryingStorage, retry_db
from faceweave.serve.segment_store import SegmentRecord, SqlSegmentStore
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.storage import tenant_dir
from faceweave.serve.store import Job, JobState, SqlJobStore

log = logging.getLogger("faceweave.serve.ray")


@dataclass(frozen=True)
class RayOptions:
    """The executor's knobs (from :class:`~faceweave.serve.settings.ServiceSettings`)."""

    address: str | None = None  # None: start a local Ray instance (tests, one machine)
    namespace: str = "faceweave"
    actors: int = 0  # 0: one per GPU in the cluster (at least 1)
    gpus_per_actor: float = 1.0
    segment_frames: int = 300
    batch_window_s: float = 0.05
    batch_max: int = 16
    lease_s: float = 30.0
    segment_attempts: int = 5
    warm_settings: dict[str, Any] | None = None
    storage_options: dict[str, Any] = field(default_factory=dict, repr=False)


class RayExecutor:
    """:class:`~faceweave.serve.executor.Executor` on a Ray cluster (see the module doc)."""

    def __init__(self, store: SqlJobStore, storage: RetryingStorage, *, hub: ProgressHub, options: RayOptions,
                 on_finished: JobHook | None = None, poll_interval_s: float = 0.5) -> None:  # fmt: skip
        self.store, self.storage, self.hub, self.options = store, storage, hub, options
        self.segments = SqlSegmentStore(store.engine)
        self.on_finished, self.poll_interval_s = on_finished, poll_interval_s
        self.pool: ActorPool | None = None
        self._stopping = threading.Event()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._cancelled: set[str] = set()
        self._threads: list[threading.Thread] = []

    # --- Executor protocol ---------------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return self.pool is not None and self.pool.ready_count() > 0

    def start(self) -> None:
        import ray

        try:
            self.storage.check()  # wrong S3 credentials fail here, with a clear message, not in the first job
        except FaceweaveError as exc:
            log.error("storage check failed: %s (%s)", exc.one_line(), exc.hint)
            raise
        if not ray.is_initialized():
            ray.init(address=self.options.address, namespace=self.options.namespace, log_to_driver=False,
                     include_dashboard=False, configure_logging=False)  # fmt: skip
        self.pool = ActorPool(self.options)
        self.pool.start()
        self._requeue(startup=True)
        self._spawn(self._dispatch, "faceweave-ray-dispatch")

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self.pool is not None:
            self.pool.stop()
        deadline = time.monotonic() + timeout_s
        for t in list(self._threads):
            t.join(max(0.0, deadline - time.monotonic()))
        # the actors stay up (detached): the next API process finds them warm; running jobs resume there

    def notify(self) -> None:
        self._wake.set()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def running_jobs(self) -> int:
        with self._lock:
            return len(self._running)

    # --- dispatch ------------------------------------------------------------------------------------------
    def _spawn(self, target: Any, name: str, *args: Any) -> None:
        t = threading.Thread(target=target, args=args, name=name, daemon=True)
        t.start()
        self._threads = [x for x in self._threads if x.is_alive()] + [t]

    def _requeue(self, *, startup: bool = False) -> None:
        with self._lock:
            mine = set(self._running)
        try:
            n = self.store.requeue_stale(time.time() - self.options.lease_s, exclude=mine)
        except Exception as exc:
            log.warning("cannot requeue stale jobs now (%s)", type(exc).__name__)
            return
        if n:
            log.info("requeued %d job(s) whose executor stopped reporting%s", n, " (startup)" if startup else "")

    def _capacity(self) -> int:
        assert self.pool is not None
        return max(1, 2 * self.pool.size)

    def _dispatch(self) -> None:
        last_requeue = time.monotonic()
        while not self._stopping.is_set():
            if time.monotonic() - last_requeue > self.options.lease_s / 2:
                self._requeue()
                last_requeue = time.monotonic()
            job = None
            if self.running_jobs() < self._capacity():
                try:
                    job = self.store.claim_next()
                except Exception as exc:
                    log.warning("cannot claim a job now (%s)", type(exc).__name__)
            if job is None:
                self._wake.wait(self.poll_interval_s)
                self._wake.clear()
                continue
            if job.media_kind == "video":
                self._begin([job])
                self._spawn(self._run_video, f"faceweave-job-{job.id[:8]}", job)
            else:
                batch = self._collect_images(job)
                self._begin(batch)
                self._spawn(self._run_images, f"faceweave-images-{job.id[:8]}", batch)

    def _begin(self, jobs: list[Job]) -> None:
        with self._lock:
            self._running.update(j.id for j in jobs)
        for j in jobs:
            self.hub.publish(j.id, job_event(j))

    def _collect_images(self, first: Job) -> list[Job]:
        """Image jobs claimed within the batching window go to one actor together (videos start on their own)."""
        batch, end = [first], time.monotonic() + self.options.batch_window_s
        while len(batch) < self.options.batch_max and time.monotonic() < end:
            try:
                job = self.store.claim_next()
            except Exception:
                break
            if job is None:
                time.sleep(0.005)
                continue
            if job.media_kind == "video":
                self._begin([job])
                self._spawn(self._run_video, f"faceweave-job-{job.id[:8]}", job)
            else:
                batch.append(job)
        return batch

    def _spec(self, job: Job) -> WorkSpec:
        return WorkSpec(job.id, job.settings, job.source_keys, job.target_key, self.storage.url,
                        self.options.storage_options)  # fmt: skip

    def _result_key(self, job: Job, suffix: str) -> str:
        return f"{tenant_dir(job.tenant)}/{job.id}/result{suffix}"

    # --- image jobs ----------------------------------------------------------------------------------------
    def _run_images(self, jobs: list[Job]) -> None:
        assert self.pool is not None
        from faceweave.serve.executor import output_extension

        try:
            keys = [self._result_key(j, output_extension("image", _key_path(j.target_key))) for j in jobs]
            specs = [self._spec(j) for j in jobs]
            log.info("image batch of %d job(s)", len(jobs))
            for attempt in range(self.options.segment_attempts):
                try:
                    entries = self.pool.call(lambda a: a.swap_images.remote(specs, keys), self._stopping)
                    break
                except ActorLost:
                    log.warning("an actor died during an image batch (attempt %d); retrying elsewhere", attempt + 1)
            else:
                for j in jobs:
                    self._fail(j, "ActorLost", "worker_lost", "the GPU workers kept failing")
                return
            forwards: dict[str, int] = entries[0]["forwards"] if entries else {}
            log.info("%d image job(s) ran as %d engine call(s): %s", len(jobs), sum(forwards.values()),
                     ", ".join(f"{stage} {n}" for stage, n in sorted(forwards.items())) or "none")
            for job, key, entry in zip(jobs, keys, entries, strict=True):
                with job_context(job.id):
                    if "error" in entry:
                        self._fail(job, entry["error"]["type"], entry["error"]["code"], entry["error"]["message"])
                    elif not self._finish_job(job, key, e=entry):
                        self.storage.delete_prefix(key)  # cancelled meanwhile: keep nothing
        except Exception as exc:
            if not self._stopping.is_set():
                log.exception("image batch crashed")
                for j in jobs:
                    self._fail(j, type(exc).__name__, "internal_error", f"{type(exc).__name__}: {exc}")
        finally:
            for j in jobs:
                self._done(j)

    # --- video jobs ----------------------------------------------------------------------------------------
    def _run_video(self, job: Job) -> None:
        with job_context(job.id):
            try:
                log.info("video job started (attempt %d)", job.attempts)
                self._video(job)
            except JobCancelled:
                if not self._stopping.is_set():
                    retry_db(lambda: self.store.cancel(job.id), what="cancel")
            except Exception as exc:
                if self._stopping.is_set():
                    log.info("job interrupted by shutdown; it resumes on the next API process")
                else:
                    log.exception("video job crashed")
                    self._fail(job, type(exc).__name__, "internal_error", f"{type(exc).__name__}: {exc}")
            finally:
                self._done(job)

    def _check(self, job: Job) -> None:
        """Raise JobCancelled when the job was cancelled, taken over by another API process, or we stop."""
        with self._lock:
            cancelled = job.id in self._cancelled
        if cancelled or self._stopping.is_set():
            raise JobCancelled("the job was cancelled", hint=None)
        try:
            current = self.store.get_job(job.id)
        except Exception:
            return  # the database is away for a moment: keep working, the writes retry
        if current is None or current.state != JobState.running or current.attempts != job.attempts:
            raise JobCancelled("the job is no longer ours", hint=None)

    def _video(self, job: Job) -> None:
        assert self.pool is not None
        spec = self._spec(job)
        records = retry_db(lambda: self.segments.segments(job.id), what="read segments")
        if not records:
            planned = self._plan(job, spec)
            if planned is None:
                return
            records = retry_db(lambda: self.segments.save_plan(job.id, planned), what="save plan")
        first_pts = records[0].start_pts
        total = sum(r.frames for r in records)
        done: dict[int, SegmentRecord] = {r.index: r for r in records if r.state == "done"}
        pending = [r for r in records if r.state != "done"]
        failures: dict[int, int] = {}
        inflight: dict[Any, tuple[SegmentRecord, str, Any]] = {}  # ref → (segment, key, actor)
        last_report = 0.0
        if done:
            log.info("resuming: %d of %d segment(s) already done", len(done), len(records))
        while pending or inflight:
            self._check(job)
            while pending:
                actor = self.pool.try_acquire()
                if actor is None:
                    break
                seg = pending.pop(0)
                # one key per attempt: a late upload of a lost attempt never overwrites the file a record names, and
                # the key is the token that makes the record's transitions idempotent (segment_store)
                key = f"{tenant_dir(job.tenant)}/{job.id}/segments/segment_{seg.index:05d}.{uuid.uuid4().hex[:8]}.mp4"
                if not self.segments.start(job.id, seg.index, actor.name, key=key):
                    self.pool.release(actor)
                    continue
                ref = actor.handle.run_segment.remote(spec, seg.plan(), first_pts, key)
                inflight[ref] = (seg, key, actor)
            finished = self.pool.wait(list(inflight), self.poll_interval_s)
            for ref in finished:
                seg, key, actor = inflight.pop(ref)
                try:
                    out = self.pool.get(ref, actor)
                except ActorLost:
                    failures[seg.index] = failures.get(seg.index, 0) + 1
                    if failures[seg.index] >= self.options.segment_attempts:
                        raise
                    log.warning("segment %d lost with its actor %s; retrying elsewhere", seg.index, actor.name)
                    self.segments.release(job.id, seg.index, key=key)
                    pending.insert(0, seg)
                    continue
                self.pool.release(actor)
                if "error" in out:
                    self._fail(job, out["error"]["type"], out["error"]["code"], out["error"]["message"])
                    return
                if not self.segments.finish(job.id, seg.index, result_key=key, frames=out["frames"],
                                            stats=out["stats"]):  # fmt: skip
                    log.warning("segment %d was finished by another attempt: its file wins", seg.index)
                    self.storage.delete_prefix(key)
                done[seg.index] = SegmentRecord(**{**seg.__dict__, "state": "done", "result_key": key,
                                                   "frames_done": out["frames"], "stats": out["stats"]})
            if not pending and not inflight:
                pending = self._unfinished(job, records, done)
            if time.monotonic() - last_report > 0.5:
                last_report = time.monotonic()
                running = self.pool.progress([(a, job.id, s.index) for s, _, a in inflight.values()])
                self._progress(job, sum(r.frames_done for r in done.values()) + running, total, "swap")
        final = retry_db(lambda: self.segments.segments(job.id), what="read segments")
        if any(r.state != "done" or r.result_key is None for r in final):  # _unfinished made them all done
            raise RuntimeError(f"segment records inconsistent: {[(r.index, r.state) for r in final]}")
        self._join(job, spec, final, first_pts, total)

    def _unfinished(self, job: Job, records: list[SegmentRecord],
                    done: dict[int, SegmentRecord]) -> list[SegmentRecord]:  # fmt: skip
        """The job is joined from its segment records, never from memory: check every record is done; a segment
        finished here whose record is not (a write the database lost) gets its finish written again (idempotent);
        a segment with neither is computed again. The segments to run again, normally none."""
        again = []
        for rec in retry_db(lambda: self.segments.segments(job.id), what="read segments"):
            if rec.state == "done" and rec.completions >= 1:
                continue
            mine = done.get(rec.index)
            if mine is not None and mine.result_key is not None:
                log.error("segment %d: its finished record is missing (state %s); writing it again", rec.index,
                          rec.state)  # fmt: skip
                if self.segments.finish(job.id, rec.index, result_key=mine.result_key, frames=mine.frames_done,
                                        stats=mine.stats):  # fmt: skip
                    continue
            log.error("segment %d: not finished in its record (state %s); running it again", rec.index, rec.state)
            done.pop(rec.index, None)
            again.append(next(r for r in records if r.index == rec.index))
        return again

    def _plan(self, job: Job, spec: WorkSpec) -> list[dict[str, Any]] | None:
        assert self.pool is not None
        for _ in range(self.options.segment_attempts):
            self._check(job)
            try:
                out = self.pool.call(lambda a: a.plan_video.remote(spec, self.options.segment_frames), self._stopping)
            except ActorLost:
                continue
            if "error" in out:
                self._fail(job, out["error"]["type"], out["error"]["code"], out["error"]["message"])
                return None
            self._progress(job, 0, int(out["frames_total"]), "planned")
            return list(out["segments"])
        raise RuntimeError("planning failed on every attempt: the GPU workers keep dying")

    def _join(self, job: Job, spec: WorkSpec, done: list[SegmentRecord], first_pts: int, total: int) -> None:
        assert self.pool is not None
        err = no_face_error(sum(int(r.stats.get("frames_with_faces", 0)) for r in done), "the target video")
        if err is not None:
            self._fail(job, err["type"], err["code"], err["message"])
            return
        keys = [str(r.result_key) for r in done if r.frames_done > 0]
        result_key = self._result_key(job, ".mp4")
        self._progress(job, total, total, "join")
        for _ in range(self.options.segment_attempts):
            self._check(job)
            try:
                out = self.pool.call(lambda a: a.join.remote(spec, keys, first_pts, result_key), self._stopping)
                break
            except ActorLost:
                continue
        else:
            raise RuntimeError("the join failed on every attempt: the GPU workers keep dying")
        if "error" in out:
            self._fail(job, out["error"]["type"], out["error"]["code"], out["error"]["message"])
            return
        stats = {k: sum(int(r.stats.get(k, 0)) for r in done) for k in SEGMENT_COUNTERS}
        stats.update(frames=sum(r.frames_done for r in done), segments=len(done), audio=out.get("audio"),
                     segment_attempts=sum(r.attempts for r in done))  # fmt: skip
        if self._finish_job(job, result_key, e={"bytes": out["bytes"], "faces": stats["faces_swapped"],
                                                "kind": "video", "stats": stats}):  # fmt: skip
            self.storage.delete_prefix(f"{tenant_dir(job.tenant)}/{job.id}/segments")
            log.info("video job finished: %d segment(s)", len(done))
        else:
            self.storage.delete_prefix(result_key)

    # --- bookkeeping ---------------------------------------------------------------------------------------
    def _progress(self, job: Job, frames_done: int, total: int | None, stage: str) -> None:
        try:  # also the job's heartbeat; a database away for a moment only delays it
            self.store.update_progress(job.id, frames_done=frames_done, frames_total=total, fps=0.0, eta_s=None,
                                       stage=stage)  # fmt: skip
        except Exception as exc:
            log.warning("progress not written (%s)", type(exc).__name__)
        self.hub.publish(job.id, {"id": job.id, "state": "running", "stage": stage, "frames_done": frames_done,
                                  "frames_total": total, "fps": 0.0, "eta_s": None, "error": None})  # fmt: skip

    def _finish_job(self, job: Job, result_key: str, *, e: dict[str, Any]) -> bool:
        """Mark the job succeeded; False when it was not ours to finish (cancelled meanwhile). A finish retried
        after an unknown outcome finds the job already succeeded with this very result: that is ours, not a loss."""

        def once() -> bool:
            if self.store.finish(job.id, result_key=result_key, result_bytes=e["bytes"], faces_swapped=e["faces"],
                                 kind=e["kind"], stats=e["stats"]):  # fmt: skip
                return True
            now = self.store.get_job(job.id)
            return now is not None and now.state == JobState.succeeded and now.result_key == result_key

        return retry_db(once, what="finish")

    def _fail(self, job: Job, error_type: str, code: str, message: str) -> None:
        retry_db(lambda: self.store.fail(job.id, error_type=error_type, error_code=code, error_message=message),
                 what="fail")  # fmt: skip

    def _done(self, job: Job) -> None:
        with self._lock:
            self._running.discard(job.id)
            self._cancelled.discard(job.id)
        try:
            final = self.store.get_job(job.id)
        except Exception:
            return
        if final is None:
            return
        self.hub.publish(job.id, job_event(final))
        if final.state.finished and self.on_finished is not None:
            try:
                self.on_finished(final)
            except Exception:
                log.exception("job completion hook failed")


def make_ray_executor(settings: ServiceSettings, store: SqlJobStore, hub: ProgressHub,
                      on_finished: JobHook | None) -> tuple[RetryingStorage, RayExecutor]:  # fmt: skip
    """The storage (with retries) and the executor for ``settings.executor == "ray"``."""
    from faceweave.serve.inputs import job_settings
    from faceweave.settings import SwapSettings

    storage = RetryingStorage(settings.resolved_storage_url, **settings.storage_options)
    warm = job_settings(settings, SwapSettings()).model_dump(mode="json") if settings.warmup else None
    options = RayOptions(
        address=settings.ray_address, namespace=settings.ray_namespace, actors=settings.ray_actors,
        gpus_per_actor=settings.ray_gpus_per_actor, segment_frames=settings.ray_segment_frames,
        batch_window_s=settings.ray_batch_window_s, lease_s=settings.ray_lease_s, warm_settings=warm,
        storage_options=dict(settings.storage_options),
    )  # fmt: skip
    return storage, RayExecutor(store, storage, hub=hub, options=options, on_finished=on_finished)


def _key_path(key: str) -> Any:
    from pathlib import Path

    return Path(key.rsplit("/", 1)[-1])
