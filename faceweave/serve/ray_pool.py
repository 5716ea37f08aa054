"""The pool of GPU actors the Ray executor hands work to: which actors answer, which are idle.

Actors are named (``faceweave-swap-<i>``) and detached in the executor's namespace, created with
``get_if_exists``: a restarted API finds the previous process's actors, models still warm. Ray restarts an actor
whose process died (``max_restarts=-1``) wherever a GPU is free; the pool gives work only to actors that answered
a ``ping`` since their last failure, so a call never waits behind an actor that cannot be placed (its node left).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faceweave.serve.ray_executor import RayOptions

log = logging.getLogger("faceweave.serve.ray")


class ActorLost(RuntimeError):
    """The actor running a work item died (or its node left); the item can be retried on another actor."""


@dataclass
class PooledActor:
    name: str
    handle: Any
    ready: bool = False
    busy: bool = False
    ping: Any = None  # the ObjectRef of the readiness ping in flight
    ping_sent: float = 0.0
    info: dict[str, Any] | None = None


def lost_errors() -> tuple[type[BaseException], ...]:
    """Ray's errors that mean "the actor or its node is gone", not "the work item failed"."""
    from ray import exceptions as rx

    return (rx.RayActorError, rx.ActorUnavailableError, rx.WorkerCrashedError, rx.NodeDiedError, rx.ObjectLostError,
            rx.OwnerDiedError, rx.LocalRayletDiedError)  # fmt: skip


class ActorPool:
    """One actor per GPU of the cluster (or ``options.actors``), with readiness tracking (see the module doc)."""

    def __init__(self, options: RayOptions) -> None:
        import ray

        from faceweave.serve.ray_worker import SwapWorker

        self.options = options
        gpus = int(ray.cluster_resources().get("GPU", 0) // max(options.gpus_per_actor, 1e-6))
        self.size = options.actors or max(1, gpus)
        self._remote = ray.remote(SwapWorker)
        self._cond = threading.Condition()
        self._actors = [PooledActor(f"faceweave-swap-{i}", None) for i in range(self.size)]
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _create(self, actor: PooledActor) -> None:
        num_gpus = self.options.gpus_per_actor if self._has_gpus() else 0
        actor.handle = self._remote.options(  # type: ignore[attr-defined]
            name=actor.name, namespace=self.options.namespace, lifetime="detached", get_if_exists=True,
            max_restarts=-1, max_task_retries=0, num_gpus=num_gpus, num_cpus=0, max_concurrency=4,
        ).remote(self.options.warm_settings)  # fmt: skip

    def _has_gpus(self) -> bool:
        import ray

        return ray.cluster_resources().get("GPU", 0) > 0

    def start(self) -> None:
        for a in self._actors:
            self._create(a)
            self._ping(a)
        self._thread = threading.Thread(target=self._watch, name="faceweave-ray-pool", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()

    def _ping(self, a: PooledActor) -> None:
        a.ready, a.ping, a.ping_sent = False, a.handle.ping.remote(), time.monotonic()

    def _watch(self) -> None:
        """Turn answered pings into ready actors; re-ping (or re-create) failed ones."""
        import ray

        while not self._stop.is_set():
            with self._cond:
                waiting = [a for a in self._actors if a.ping is not None]
            refs = [a.ping for a in waiting]
            ready_refs = ray.wait(refs, num_returns=len(refs), timeout=0.2)[0] if refs else []
            if not refs:
                self._stop.wait(0.2)
            for a in waiting:
                if a.ping not in ready_refs:
                    continue
                try:
                    a.info = ray.get(a.ping)
                    with self._cond:
                        a.ready, a.ping = True, None
                        self._cond.notify_all()
                    log.info("actor %s ready on node %s (pid %s)", a.name, a.info["node"][:8], a.info["pid"])
                except Exception as exc:  # dead for good (not restartable): make it anew after a pause
                    log.warning("actor %s did not answer (%s); re-creating it", a.name, type(exc).__name__)
                    time.sleep(0.5)
                    try:
                        self._create(a)
                    except Exception:
                        log.exception("cannot re-create actor %s", a.name)
                    self._ping(a)

    def ready_count(self) -> int:
        with self._cond:
            return sum(1 for a in self._actors if a.ready)

    def try_acquire(self) -> PooledActor | None:
        with self._cond:
            return self.try_acquire_locked()

    def acquire(self, stop: threading.Event) -> PooledActor:
        while True:
            with self._cond:
                a = self.try_acquire_locked()
                if a is not None:
                    return a
                if stop.is_set():
                    raise ActorLost("the executor is stopping")
                self._cond.wait(0.2)

    def try_acquire_locked(self) -> PooledActor | None:
        """An idle ready actor, marked busy (the caller holds the pool's lock)."""
        for a in self._actors:
            if a.ready and not a.busy:
                a.busy = True
                return a
        return None

    def release(self, a: PooledActor, *, failed: bool = False) -> None:
        with self._cond:
            a.busy = False
            if failed:
                self._ping(a)  # answered again once Ray has restarted it (on this node or another)
            self._cond.notify_all()

    def wait(self, refs: list[Any], timeout_s: float) -> list[Any]:
        import ray

        if not refs:
            time.sleep(min(timeout_s, 0.05))
            return []
        # wake on the first finished call (an actor is free again), then take every other one already finished
        if not ray.wait(refs, num_returns=1, timeout=timeout_s)[0]:
            return []
        return list(ray.wait(refs, num_returns=len(refs), timeout=0)[0])

    def get(self, ref: Any, a: PooledActor) -> Any:
        """The result of a finished call on ``a``; :class:`ActorLost` (and ``a`` re-pinged) when ``a`` died."""
        import ray

        try:
            return ray.get(ref)
        except lost_errors() as exc:
            self.release(a, failed=True)
            raise ActorLost(f"actor {a.name} was lost: {type(exc).__name__}") from exc

    def call(self, submit: Callable[[Any], Any], stop: threading.Event) -> Any:
        """Run one work item on an idle ready actor and wait for it; :class:`ActorLost` when that actor died."""
        a = self.acquire(stop)
        ref = submit(a.handle)
        while not self.wait([ref], 0.5):
            pass
        out = self.get(ref, a)
        self.release(a)
        return out

    def progress(self, items: list[tuple[PooledActor, str, int]]) -> int:
        """Frames done in running segments, asked of their actors (0 for any that does not answer in time)."""
        import ray

        refs = [a.handle.progress.remote(job_id, index) for a, job_id, index in items]
        if not refs:
            return 0
        ready = ray.wait(refs, num_returns=len(refs), timeout=0.5)[0]
        total = 0
        for ref in ready:
            with contextlib.suppress(Exception):  # the actor died meanwhile: its segment is retried anyway
                total += int(ray.get(ref))
        return total
