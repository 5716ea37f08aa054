"""Executors run queued jobs. The API only calls :class:`Executor` (a Protocol), so a Ray executor (one
``num_gpus=1`` actor per GPU keeping its models warm) slots in without touching it.

:class:`InProcessExecutor` is the embedded default: a bounded pool of worker threads (one slot per GPU, or
``workers`` on CPU) that claim jobs from the store (``queued`` → ``running``, one conditional UPDATE), run the job
function, publish progress to SSE subscribers and record the outcome. Lifecycle (LitServe-like): ``setup`` once
per worker (models loaded and warmed), then one ``run`` per job. A failed job records its error type, code and
message; the worker survives. Cancellation is cooperative: the job's progress callback raises
:class:`JobCancelled` once the job was cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from faceweave.errors import FaceweaveError, InvalidOption
from faceweave.progress import Progress
from faceweave.serve.errors import JobCancelled
from faceweave.serve.limits import VIDEO_TYPES
from faceweave.serve.logging import job_context
from faceweave.serve.storage import Storage, tenant_dir
from faceweave.serve.store import Job, JobItem, JobState, JobStore
from faceweave.settings import SwapSettings

if TYPE_CHECKING:  # the engine (torch) loads in the worker, when a job first needs it
    from faceweave.pipeline.engine import SwapEngine
    from faceweave.pipeline.image_batch import DeviceOutcome, ImageJob
    from faceweave.serve.urls import AddressPolicy

log = logging.getLogger("faceweave.serve.executor")
URL_KEY_PREFIX = "url:"  # a job input that is a client URL (fetched by the job), not a storage key


# --- progress fan-out ------------------------------------------------------------------------------------------
class ProgressHub:
    """Fans job events out to SSE subscribers (asyncio queues), from any thread. One per app instance."""

    def __init__(self) -> None:
        self._subscribers: dict[str, set[tuple[asyncio.AbstractEventLoop, asyncio.Queue[dict[str, Any]]]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, job_id: str) -> asyncio.Queue[dict[str, Any]]:
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=256)
        with self._lock:
            self._subscribers.setdefault(job_id, set()).add((asyncio.get_running_loop(), queue))
        return queue

    def unsubscribe(self, job_id: str, queue: asyncio.Queue[dict[str, Any]]) -> None:
        with self._lock:
            subs = self._subscribers.get(job_id, set())
            for item in [s for s in subs if s[1] is queue]:
                subs.discard(item)
            if not subs:
                self._subscribers.pop(job_id, None)

    def publish(self, job_id: str, event: dict[str, Any]) -> None:
        with self._lock:
            subs = list(self._subscribers.get(job_id, ()))
        for loop, queue in subs:
            with contextlib.suppress(RuntimeError):  # the subscriber's loop is closed: it is gone
                loop.call_soon_threadsafe(_put_latest, queue, event)


def _put_latest(queue: asyncio.Queue[dict[str, Any]], event: dict[str, Any]) -> None:
    # A slow reader loses old progress events, never the newest one (nor the final state, sent last).
    if queue.full():
        with contextlib.suppress(asyncio.QueueEmpty):
            queue.get_nowait()
    queue.put_nowait(event)


def job_event(job: Job) -> dict[str, Any]:
    """The SSE/webhook view of a job's progress."""
    return {
        "id": job.id, "state": job.state.value, "stage": job.stage, "frames_done": job.frames_done,
        "frames_total": job.frames_total, "fps": round(job.fps, 3), "eta_s": job.eta_s,
        "error": {"code": job.error_code, "message": job.error_message} if job.error_code else None,
    }  # fmt: skip


# --- the job function ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class JobContext:
    """Everything one run of a job gets: local input files, the output path, a resumable work folder."""

    job: Job
    settings: SwapSettings
    sources: list[Path]
    target: Path
    output: Path
    work_dir: Path
    progress: Callable[[Progress], None]
    worker_state: dict[str, Any]
    # videos are cut into segments of about this many seconds, kept in work_dir: the unit of crash resume
    segment_s: float | None = None


@dataclass(frozen=True)
class JobOutcome:
    output: Path
    kind: str
    faces_swapped: int
    stats: dict[str, Any]


JobFunction = Callable[[JobContext], JobOutcome]


def output_extension(target_kind: str | None, target: Path) -> str:
    """Images keep their format (PNG stays lossless); videos become MP4 (also when the kind is only known from
    the fetched file's extension, for a URL import)."""
    if target_kind == "video" or (target_kind is None and target.suffix.lower().lstrip(".") in VIDEO_TYPES):
        return ".mp4"
    suffix = target.suffix.lower()
    return suffix if suffix in (".png", ".jpg", ".jpeg", ".webp") else ".png"


def run_swap(ctx: JobContext) -> JobOutcome:
    """The real job, on the worker's warm :class:`SwapEngine`. Videos run as segments of ``ctx.segment_s`` seconds
    in ``ctx.work_dir`` (progress after every frame batch; a rerun after a crash reuses the finished segments)."""
    engine = _engine_for(ctx.worker_state, ctx.settings)
    if ctx.job.media_kind == "image":
        from faceweave.pipeline.image import swap_image_file

        result = swap_image_file(
            [str(s) for s in ctx.sources], ctx.target, ctx.output, ctx.settings, progress=ctx.progress, engine=engine
        )
    else:
        from faceweave.pipeline.video import swap_video

        result = swap_video(ctx.sources, ctx.target, ctx.output, ctx.settings, progress=ctx.progress,
                            work_dir=ctx.work_dir, engine=engine, segment_s=ctx.segment_s)  # fmt: skip
    return JobOutcome(result.output, result.kind, result.faces_swapped, dict(result.stats))


def image_batch_runner(worker_state: dict[str, Any]
                       ) -> Callable[[list[ImageJob]], list[DeviceOutcome | FaceweaveError]]:
    """What a :sync batch runs: the model forwards of its jobs together
    (:func:`~faceweave.pipeline.image_batch.swap_image_batch_on_device`) on ``worker_state``'s warm engines; per job
    its outcome, still on the device, or its own error. Everything on the host — decoding, the conversion of the
    result (:meth:`~faceweave.pipeline.image_batch.DeviceOutcome.to_host`), marking and encoding — stays with each
    request's thread, so the batch's thread goes straight on to the next batch's forwards."""
    from faceweave.pipeline.image_batch import swap_image_batch_on_device

    return lambda jobs: swap_image_batch_on_device(jobs, lambda settings: batch_engine(worker_state, settings))


def batch_engine(worker_state: dict[str, Any], settings: SwapSettings) -> SwapEngine:
    """A warm engine of the worker that runs the forwards of ``settings`` (same models and options: the per-job
    choices are read from each job's own settings), else :func:`_engine_for`'s."""
    from faceweave.pipeline.image_batch import forward_key

    key = forward_key(settings)
    warm = _engine_cache(worker_state).find(lambda engine: forward_key(engine.settings) == key)
    return warm if warm is not None else _engine_for(worker_state, settings)


class EngineCache:
    """Warm engines by settings (at most ``limit`` kept), shared by every worker thread of one executor: K
    concurrent jobs with the same model settings run on one :class:`SwapEngine` (its forwards serialise on the
    engine's lock; see :class:`SwapEngine`), so the models and CUDA graphs are loaded once, not K times."""

    def __init__(self, limit: int = 4) -> None:
        self.limit = limit
        self._engines: dict[str, SwapEngine] = {}
        self._lock = threading.Lock()

    def get(self, settings: SwapSettings) -> SwapEngine:
        from faceweave.pipeline.engine import SwapEngine

        key = settings.model_dump_json()
        # held while an engine is built, so two workers asking at once build it once
        with self._lock:
            if key not in self._engines:
                if len(self._engines) >= self.limit:
                    self._engines.pop(next(iter(self._engines)))
                self._engines[key] = SwapEngine(settings)
            return self._engines[key]

    def find(self, matches: Callable[[SwapEngine], bool]) -> SwapEngine | None:
        """A warm engine that ``matches``, if any (the :sync batch path reuses one with the same forwards)."""
        with self._lock:
            return next((engine for engine in self._engines.values() if matches(engine)), None)


def _engine_for(worker_state: dict[str, Any], settings: SwapSettings) -> SwapEngine:
    """The warm engine for ``settings`` from the worker's :class:`EngineCache` (``worker_state["engines"]``; the
    in-process executor gives all its workers the same one)."""
    return _engine_cache(worker_state).get(settings)


def _engine_cache(worker_state: dict[str, Any]) -> EngineCache:
    cache: EngineCache = worker_state.setdefault("engines", EngineCache())
    return cache


def warm_up(worker_state: dict[str, Any], settings: SwapSettings) -> None:
    """Load and run the models of ``settings`` (a job's default settings) once, so the first job does not pay."""
    _engine_for(worker_state, settings).warm_up()


class Executor(Protocol):
    """What the API needs from an executor."""

    @property
    def ready(self) -> bool: ...
    def start(self) -> None: ...
    def stop(self, timeout_s: float = 10.0) -> None: ...
    def notify(self) -> None: ...
    def cancel(self, job_id: str) -> None: ...
    def running_jobs(self) -> int: ...


JobHook = Callable[[Job], None]


@dataclass
class _StageClock:
    """Which stage a running job is in since when, and when its progress was last written."""

    since: float
    stage: str = ""
    last_write: float = 0.0


class InProcessExecutor:
    """:class:`Executor` on a pool of worker threads in this process."""

    def __init__(
        self,
        store: JobStore,
        storage: Storage,
        work_root: Path,
        *,
        slots: int,
        hub: ProgressHub,
        job_function: JobFunction = run_swap,
        setup: Callable[[dict[str, Any]], None] | None = None,
        on_finished: JobHook | None = None,
        on_stage: Callable[[str, float], None] | None = None,
        device: str = "auto",
        poll_interval_s: float = 1.0,
        segment_s: float | None = 4.0,
        fetch_url: Callable[[str, Path], Path] | None = None,
    ) -> None:
        if slots < 1:
            raise ValueError(f"an executor needs at least one slot, got {slots}")
        self.store, self.storage, self.work_root = store, storage, work_root
        self.slots, self.hub, self.job_function = slots, hub, job_function
        self.setup, self.on_finished, self.on_stage = setup, on_finished, on_stage
        self.device, self.fetch_url = device, fetch_url
        self.poll_interval_s = poll_interval_s
        self.segment_s = segment_s
        self._wake = threading.Condition()
        self._pending_wakeups = 0
        self._stopping = threading.Event()
        self._cancelled: set[str] = set()
        self._running: set[str] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ready = [False] * slots
        self._engines = EngineCache()  # one warm engine per model settings for all workers

    @property
    def engines(self) -> EngineCache:
        """The warm engines of every worker (the API's :sync slots share them too)."""
        return self._engines

    @property
    def ready(self) -> bool:
        return all(self._ready)

    def start(self) -> None:
        requeued = self.store.requeue_unfinished()
        if requeued:
            log.info("requeued %d interrupted job(s)", requeued)
        for i in range(self.slots):
            t = threading.Thread(target=self._worker, args=(i,), name=f"faceweave-worker-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        with self._lock:
            self._cancelled.update(self._running)  # interrupt running jobs at their next progress event
        self.notify()
        deadline = time.monotonic() + timeout_s
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))

    def notify(self) -> None:
        with self._wake:
            self._pending_wakeups += 1
            self._wake.notify_all()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            self._cancelled.add(job_id)

    def running_jobs(self) -> int:
        with self._lock:
            return len(self._running)

    # --- worker loop ---------------------------------------------------------------------------------------
    def _worker(self, index: int) -> None:
        worker_state: dict[str, Any] = {"engines": self._engines}
        if self.setup is not None:
            try:
                self.setup(worker_state)
            except Exception:
                log.exception("worker %d: warm-up failed; models will load on the first job", index)
        self._ready[index] = True
        while not self._stopping.is_set():
            try:
                job = self.store.claim_next()
            except Exception:
                log.exception("worker %d: cannot claim a job", index)
                job = None
            if job is None:
                with self._wake:
                    if self._pending_wakeups == 0 and not self._stopping.is_set():
                        self._wake.wait(self.poll_interval_s)
                    self._pending_wakeups = max(0, self._pending_wakeups - 1)
                continue
            with self._lock:
                self._running.add(job.id)
            try:
                with job_context(job.id):
                    self._run(job, worker_state)
            finally:
                with self._lock:
                    self._running.discard(job.id)
                    self._cancelled.discard(job.id)

    def _run(self, job: Job, worker_state: dict[str, Any]) -> None:
        log.info("job started (attempt %d)", job.attempts)
        self.hub.publish(job.id, job_event(job))
        work_dir = self.work_root / job.id
        work_dir.mkdir(parents=True, exist_ok=True)
        t0 = time.monotonic()
        stage_state = _StageClock(since=t0)

        def progress(p: Progress) -> None:
            now = time.monotonic()
            if job.id in self._cancelled:
                raise JobCancelled("the job was cancelled", hint=None)
            if p.stage != stage_state.stage:
                if stage_state.stage and self.on_stage is not None:
                    self.on_stage(stage_state.stage, now - stage_state.since)
                stage_state.stage, stage_state.since = p.stage, now
            elif now - stage_state.last_write < 0.25 and p.frames_done != p.frames_total:
                return  # throttle: at most 4 store writes per second per job
            stage_state.last_write = now
            self.store.update_progress(
                job.id, frames_done=p.frames_done, frames_total=p.frames_total, fps=p.fps, eta_s=p.eta_s,
                stage=p.stage,
            )  # fmt: skip
            self.hub.publish(job.id, {
                "id": job.id, "state": "running", "stage": p.stage, "frames_done": p.frames_done,
                "frames_total": p.frames_total, "fps": round(p.fps, 3), "eta_s": p.eta_s, "error": None,
            })  # fmt: skip

        try:
            settings = SwapSettings.build(**job.settings)
            sources = [self._local_input(key, work_dir) for key in job.source_keys]
            items = self.store.list_items([job.id]).get(job.id)
            if items:
                self._run_batch(job, items, settings, sources, work_dir, progress, worker_state)
                if stage_state.stage and self.on_stage is not None:
                    self.on_stage(stage_state.stage, time.monotonic() - stage_state.since)
                log.info("batch job finished in %.2f s", time.monotonic() - t0)
                return
            target = self._local_input(job.target_key, work_dir)
            output = work_dir / f"result{output_extension(job.media_kind, target)}"
            outcome = self.job_function(
                JobContext(job, settings, sources, target, output, work_dir, progress, worker_state, self.segment_s)
            )
            if stage_state.stage and self.on_stage is not None:
                self.on_stage(stage_state.stage, time.monotonic() - stage_state.since)
            result_key = f"{tenant_dir(job.tenant)}/{job.id}/result{outcome.output.suffix}"
            size = self.storage.upload(outcome.output, result_key)
            if not self.store.finish(
                job.id, result_key=result_key, result_bytes=size, faces_swapped=outcome.faces_swapped,
                kind=outcome.kind, stats=outcome.stats,
            ):  # fmt: skip
                self.storage.delete_prefix(result_key)  # cancelled meanwhile: keep nothing
            log.info("job finished in %.2f s", time.monotonic() - t0)
        except JobCancelled:
            current = self.store.get_job(job.id)
            if self._stopping.is_set() and current is not None and current.state == JobState.running:
                log.info("job interrupted by shutdown; it resumes at the next start")
                return
            self.store.cancel(job.id)
            log.info("job cancelled")
        except FaceweaveError as exc:
            self.store.fail(job.id, error_type=type(exc).__name__, error_code=exc.code, error_message=exc.one_line())
            log.info("job failed: %s", exc.code)
        except Exception as exc:  # a bug must fail the job, not the worker
            log.exception("job crashed")
            self.store.fail(
                job.id, error_type=type(exc).__name__, error_code="internal_error",
                error_message=f"{type(exc).__name__}: {exc}"[:2000],
            )  # fmt: skip
        finally:
            self._finish(job, work_dir)

    def _run_batch(
        self, job: Job, items: list[JobItem], settings: SwapSettings, sources: list[Path], work_dir: Path,
        progress: Callable[[Progress], None], worker_state: dict[str, Any],
    ) -> None:
        """Each target of a batch job in turn, on the one warm engine. An item that fails is recorded as failed with
        its reason and the batch goes on; items finished before a restart are skipped. The job's progress counts
        items (``frames_done`` of ``frames_total`` = items finished of items)."""
        total, folder = len(items), f"{tenant_dir(job.tenant)}/{job.id}"
        done = sum(1 for it in items if it.state in ("succeeded", "failed"))
        for item in items:
            if item.state in ("succeeded", "failed") or item.target_key is None:
                continue

            def item_progress(p: Progress, done: int = done) -> None:
                progress(Progress(stage=p.stage, frames_done=done, frames_total=total, fps=p.fps, eta_s=None))

            self.store.update_item(job.id, item.index, state="running")
            item_dir = work_dir / "items" / str(item.index)  # its own segments: a video item resumes too
            item_dir.mkdir(parents=True, exist_ok=True)
            try:
                target = self._local_input(item.target_key, work_dir)
                output = item_dir / f"result{output_extension(item.media_kind, target)}"
                view = replace(job, media_kind=item.media_kind, target_key=item.target_key)
                outcome = self.job_function(JobContext(view, settings, sources, target, output, item_dir,
                                                       item_progress, worker_state, self.segment_s))  # fmt: skip
                key = f"{folder}/result_{item.index}{outcome.output.suffix}"
                size = self.storage.upload(outcome.output, key)
                self.store.update_item(job.id, item.index, state="succeeded", result_key=key, result_bytes=size,
                                       faces_swapped=outcome.faces_swapped, media_kind=outcome.kind,
                                       stats=outcome.stats)  # fmt: skip
            except JobCancelled:
                raise
            except FaceweaveError as exc:
                self.store.update_item(job.id, item.index, state="failed", error_code=exc.code,
                                       error_message=exc.one_line()[:4000])  # fmt: skip
                log.info("batch item %d failed: %s", item.index, exc.code)
            except Exception as exc:  # a bug in one item must not sink the others
                log.exception("batch item %d crashed", item.index)
                self.store.update_item(job.id, item.index, state="failed", error_code="internal_error",
                                       error_message=f"{type(exc).__name__}: {exc}"[:2000])  # fmt: skip
            shutil.rmtree(item_dir, ignore_errors=True)
            done += 1
            progress(Progress(stage="swap", frames_done=done, frames_total=total))
        final = self.store.list_items([job.id]).get(job.id, [])
        ok = [it for it in final if it.state == "succeeded"]
        failed = [it for it in final if it.state != "succeeded"]
        stats = {"items": total, "items_succeeded": len(ok), "items_failed": len(failed)}
        error = None
        if not ok:
            first = failed[0]
            error = (first.error_code or "internal_error",
                     f"all {total} items failed; item {first.index}: {first.error_message or ''}")  # fmt: skip
        if not self.store.finish_batch(job.id, faces_swapped=sum(it.faces_swapped or 0 for it in ok),
                                       result_bytes=sum(it.result_bytes for it in ok), stats=stats, error=error):
            for it in ok:  # cancelled meanwhile: keep nothing
                if it.result_key:
                    self.storage.delete_prefix(it.result_key)

    def _finish(self, job: Job, work_dir: Path) -> None:
        final = self.store.get_job(job.id)
        if final is None:
            return
        self.hub.publish(job.id, job_event(final))
        if final.state.finished:
            shutil.rmtree(work_dir, ignore_errors=True)  # kept only while a job can still resume
            if self.on_finished is not None:
                try:
                    self.on_finished(final)
                except Exception:
                    log.exception("job completion hook failed")

    def _local_input(self, key: str, work_dir: Path) -> Path:
        if key.startswith(URL_KEY_PREFIX):  # a URL import: fetched here, in the job, never on a request thread
            if self.fetch_url is None:
                raise InvalidOption("URL inputs are not enabled on this server", hint="upload the file instead")
            return self.fetch_url(key.removeprefix(URL_KEY_PREFIX), work_dir / "inputs")
        local = self.storage.local_path(key)
        if local is not None:
            return local
        dest = work_dir / "inputs" / key.rsplit("/", 1)[-1]
        return dest if dest.exists() else self.storage.download(key, dest)


# --- webhooks --------------------------------------------------------------------------------------------------
def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """``sha256=<hex HMAC of "<timestamp>.<body>">``; the receiver recomputes it with the shared secret."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={mac}"


def send_webhook(
    url: str, job: Job, secret: str | None, timeout_s: float, policy: AddressPolicy, attempts: int = 3
) -> bool:
    """POST the job's final state to ``url`` (HMAC-signed when a secret is set); bounded retries. The address is
    checked again at delivery (DNS can change after submit) and the connection goes to the checked address."""
    from faceweave.serve.urls import UrlRefused, log_decision, post_webhook

    body = json.dumps({"event": "job.finished", "job": job_event(job)}, sort_keys=True).encode()
    timestamp = str(int(time.time()))
    headers = {"content-type": "application/json", "x-faceweave-timestamp": timestamp}
    if secret:
        headers["x-faceweave-signature"] = sign_webhook(secret, timestamp, body)
    with job_context(job.id):  # this runs on its own thread: tag its log lines with the job
        for attempt in range(attempts):
            try:
                if post_webhook(url, body, headers, policy, timeout_s) < 300:
                    log_decision("webhook", url, "delivered")
                    return True
            except UrlRefused:
                log_decision("webhook", url, "refused at delivery")
                return False
            except FaceweaveError:
                pass  # a timeout: retry
            time.sleep(min(4.0, 0.5 * 2**attempt))
        log.warning("webhook delivery failed after %d attempts", attempts)
    return False
