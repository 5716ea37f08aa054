"""``faceweave bench`` rows for many jobs on one device (issue 19 goal 3), through the service's in-process executor
(the code path ``faceweave serve`` runs jobs on: one warm engine shared by its worker threads):

* ``k_jobs``: K video jobs at once, aggregate fps, and the ratio to K plain transcodes run at once (same encoder
  settings, same run);
* ``sync_clients``: C clients each sending image jobs one after another and waiting for each (what a ``:sync``
  request does): throughput and p50/p95 latency.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from faceweave.settings import SwapSettings


class _Service:
    """An in-process executor on a SQLite store and a local folder, as ``faceweave serve`` builds it."""

    def __init__(self, root: Path, slots: int) -> None:
        from faceweave.serve.executor import InProcessExecutor, ProgressHub
        from faceweave.serve.storage import FsspecStorage
        from faceweave.serve.store import SqlJobStore

        root.mkdir(parents=True, exist_ok=True)
        self.store = SqlJobStore(f"sqlite:///{root / 'db.sqlite'}")
        self.storage = FsspecStorage(f"file://{root / 'media'}")
        self._done: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.executor = InProcessExecutor(self.store, self.storage, root / "work", slots=slots, hub=ProgressHub(),
                                          on_finished=self._finished, poll_interval_s=0.01)  # fmt: skip
        self._n = 0

    def _finished(self, job: Any) -> None:
        with self._lock:
            event = self._done.setdefault(job.id, threading.Event())
        event.set()

    def submit(self, source: Path, target: Path, kind: str, settings: dict[str, Any]) -> str:
        from faceweave.serve.store import NewJob

        with self._lock:
            self._n += 1
            n = self._n
        src_key, tgt_key = f"b/{n}/source_0{source.suffix}", f"b/{n}/target{target.suffix}"
        self.storage.upload(source, src_key)
        self.storage.upload(target, tgt_key)
        job_id = self.store.create_job(NewJob("bench", settings, [src_key], tgt_key, kind, 20)).id
        with self._lock:
            self._done.setdefault(job_id, threading.Event())
        self.executor.notify()
        return job_id

    def wait(self, job_id: str, timeout_s: float = 3600.0) -> None:
        from faceweave.errors import FaceweaveError
        from faceweave.serve.store import JobState

        with self._lock:
            event = self._done[job_id]
        event.wait(timeout_s)
        job = self.store.get_job(job_id)
        if job is None or job.state != JobState.succeeded:
            raise FaceweaveError(f"bench job {job_id} did not succeed: {job.error_message if job else 'missing'}")

    def __enter__(self) -> _Service:
        self.executor.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.executor.stop()
        self.store.close()


def k_jobs_rows(input_path: Path, source: Path, ks: list[int], *, device: str, crf: int, preset: str,
                frames: int, log: Any = print) -> dict[str, Any]:
    """For each K: K copies of ``input_path`` swapped at once by an executor of K slots (one warm engine, warmed
    on one job first), and K plain transcodes at once (threads, same encoder settings); aggregate fps and ratio."""
    from faceweave.media.video.encode import EncoderSettings, transcode

    encoder = EncoderSettings(codec="libx264", crf=crf, preset=preset)
    settings = SwapSettings(device=device, crf=crf, preset=preset).model_dump(mode="json")  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="faceweave-kjobs-"))
    rows: dict[str, Any] = {}
    for k in ks:
        with _Service(tmp / f"k{k}", slots=k) as svc:
            svc.wait(svc.submit(source, input_path, "video", settings))  # warm: models load once, not timed
            t0 = time.perf_counter()
            ids = [svc.submit(source, input_path, "video", settings) for _ in range(k)]
            for job_id in ids:
                svc.wait(job_id)
            swap_fps = k * frames / (time.perf_counter() - t0)
        threads = [threading.Thread(target=transcode, args=(input_path, tmp / f"plain{k}_{i}.mp4", encoder))
                   for i in range(k)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        plain_fps = k * frames / (time.perf_counter() - t0)
        rows[f"k{k}"] = {"aggregate_fps": round(swap_fps, 2), "plain_aggregate_fps": round(plain_fps, 1),
                         "ratio_to_plain": round(swap_fps / plain_fps, 4)}
        log(f"K={k} concurrent video jobs: {rows[f'k{k}']}")
    return rows


def sync_client_rows(source: Path, target: Path, clients: list[int], *, device: str, slots: int,
                     requests_per_client: int, log: Any = print) -> dict[str, Any]:
    """For each C: C client threads, each sending ``requests_per_client`` image jobs one after another and waiting
    for each; requests per second and p50/p95 latency (submit → result stored)."""
    settings = SwapSettings(device=device).model_dump(mode="json")  # type: ignore[arg-type]
    tmp = Path(tempfile.mkdtemp(prefix="faceweave-sync-"))
    rows: dict[str, Any] = {}
    with _Service(tmp, slots=slots) as svc:
        svc.wait(svc.submit(source, target, "image", settings))  # warm
        for c in clients:
            latencies: list[float] = []
            lock = threading.Lock()

            def client(latencies: list[float] = latencies, lock: threading.Lock = lock) -> None:
                for _ in range(requests_per_client):
                    t = time.perf_counter()
                    svc.wait(svc.submit(source, target, "image", settings))
                    with lock:
                        latencies.append(time.perf_counter() - t)

            threads = [threading.Thread(target=client) for _ in range(c)]
            t0 = time.perf_counter()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            wall = time.perf_counter() - t0
            q = statistics.quantiles(latencies, n=20, method="inclusive") if len(latencies) > 1 else latencies * 19
            rows[f"clients_{c}"] = {"requests": len(latencies), "throughput_rps": round(len(latencies) / wall, 2),
                                    "p50_ms": round(statistics.median(latencies) * 1000, 1),
                                    "p95_ms": round(q[18] * 1000, 1), "slots": slots}
            log(f"{c} concurrent sync clients: {rows[f'clients_{c}']}")
    return rows
