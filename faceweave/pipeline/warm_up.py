"""An engine's warm-up run in the background while a video streams (issue 19 goal 4: a cold ``faceweave swap`` on
the GPU reaches its first swapped frame sooner).

The full warm-up (:meth:`SwapEngine.warm_up` for the job's frame size) captures the CUDA graphs of every shape a job
can need (every crop size, every padded face count, the detector's tiles and rotated retries) so that a job's peak
GPU memory does not depend on its content; on an H100 that was most of the 14 s before a cold job's first frame. A
video job that owns its engine defers it: its first batches capture only the graphs they use (lazily, under the
engine lock, like any capture), and :class:`BackgroundWarmUp` runs the same warm-up steps in a thread once the first
frames are out, one step per hold of the engine lock, so the stream's batches run between steps. The job stops it
when it ends (a short clip does not wait for graphs it will never use).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any, Literal

import torch

from faceweave.pipeline.engine import SwapEngine

log = logging.getLogger(__name__)

WarmUpState = Literal["pending", "running", "done", "stopped", "failed"]


class BackgroundWarmUp:
    """:meth:`SwapEngine.warm_up_steps` for ``frame_size`` in a daemon thread, each step under the engine's lock.

    :meth:`start` once; :meth:`stop` (idempotent) asks it to end after its current step and waits for the thread, so
    nothing runs on the engine after it returns. A failing step is logged (with its traceback) and ends the warm-up:
    the job goes on, and a shape it needs later is captured when first used (or runs eagerly if its capture fails,
    see :class:`~faceweave.cuda_graphs.GraphCache`); :attr:`error` and :meth:`summary` report it.
    """

    def __init__(self, engine: SwapEngine, frame_size: tuple[int, int]) -> None:
        self.engine = engine
        self.frame_size = frame_size
        self.state: WarmUpState = "pending"
        self.steps = 0  # steps completed
        self.last_step: str | None = None
        self.error: str | None = None
        self.started_at: float | None = None  # time.perf_counter() at start / when the thread ended
        self.ended_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self.started_at = time.perf_counter()
        self.state = "running"
        # daemon: a thread left behind by a crash must not keep the interpreter alive (stop() joins it normally)
        self._thread = threading.Thread(target=self._run, name="faceweave-warm-up", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the warm-up after its current step (if it has not finished) and wait for its thread."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        elif self.state == "pending":
            self.state = "stopped"

    def wait(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for the warm-up to end by itself; whether it has (False: still running, or
        never started)."""
        if self._thread is None:
            return False
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def summary(self, origin: float) -> dict[str, Any]:
        """State, steps done, error, and when it started and ended in seconds after ``origin`` (perf_counter)."""

        def rel(t: float | None) -> float | None:
            return None if t is None else round(t - origin, 3)

        return {"state": self.state, "steps": self.steps, "last_step": self.last_step, "error": self.error,
                "start_s": rel(self.started_at), "end_s": rel(self.ended_at)}

    def _run(self) -> None:
        engine = self.engine
        try:
            with contextlib.ExitStack() as stack:
                if engine.device.type == "cuda":  # the current CUDA device is per thread: a capture uses it
                    stack.enter_context(torch.cuda.device(engine.device))
                steps = engine.warm_up_steps(self.frame_size)
                while True:
                    with engine.lock:  # one step per hold: the stream's batches take turns with the captures
                        if self._stop.is_set():
                            steps.close()
                            self.state = "stopped"
                            return
                        name = next(steps, None)
                    if name is None:
                        self.state = "done"
                        return
                    self.steps += 1
                    self.last_step = name
        except Exception as exc:  # noqa: BLE001 - a warm-up failure must not fail the job: logged and reported
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"
            log.warning("background warm-up failed after %d steps (last: %s): %s; the job goes on, capturing the "
                        "shapes it needs when first used", self.steps, self.last_step, self.error, exc_info=True)
        finally:
            self.ended_at = time.perf_counter()


__all__ = ["BackgroundWarmUp", "WarmUpState"]
