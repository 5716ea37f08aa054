"""One thread that runs work submitted from many threads, in batches.

Callers (live sessions, :sync requests) block in :meth:`WindowBatcher.submit`; the batcher's thread takes every
item waiting and runs them as one batch. Under load, batches form by themselves: what arrives while a batch runs is
the next batch. Before it runs, the thread waits up to ``window_s`` for items that are known to be coming (the
:attr:`WindowBatcher.expected` count, raised by callers with :meth:`WindowBatcher.expect`), never for ones that are
not. Used by :class:`~faceweave.live.shared.SharedEngine` (engine calls of concurrent live sessions) and by the
service's :sync batch (image jobs of concurrent requests, :mod:`faceweave.pipeline.image_batch`).
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class WindowBatcher(Generic[T, R]):
    """Runs ``run(items)`` on its own thread for batches of submitted items.

    ``name`` names its thread and its errors. ``run`` returns one entry per item, in order: the item's result, or
    the exception its caller gets (an exception raised by ``run`` itself goes to every caller of that batch; the
    thread survives). ``max_items`` caps a batch (0: no cap). :attr:`batches` and :attr:`items` count what ran
    (``items / batches`` is the mean batch).
    """

    def __init__(self, run: Callable[[list[T]], Sequence[R | BaseException]], *, window_s: float, name: str,
                 max_items: int = 0) -> None:
        self.run, self.window_s, self.name, self.max_items = run, window_s, name, max_items
        self.expected = 0
        self.batches = 0
        self.items = 0
        self._pending: list[tuple[T, cf.Future[R], Announcement | None]] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def expect(self, delta: int) -> None:
        """``delta`` more (or, negative, fewer) callers will submit soon: the window waits for them."""
        with self._cond:
            self.expected = max(0, self.expected + delta)
            self._cond.notify_all()

    def announce(self) -> Announcement:
        """Count one caller in :attr:`expected` (as ``expect(1)``) until the batch that holds its item starts (or
        :meth:`Announcement.withdraw`): unlike ``expect(1)`` … ``expect(-1)`` around the whole call, a caller whose
        item already ran and who now works on its result no longer holds the next batch's window open."""
        self.expect(1)
        return Announcement(self)

    def submit(self, item: T, announcement: Announcement | None = None) -> R:
        """Run ``item`` in the next batch and return its result (or raise its exception). ``announcement``: the
        caller's from :meth:`announce`, withdrawn when the batch that holds ``item`` starts."""
        future: cf.Future[R] = cf.Future()
        with self._cond:
            if self._closed:
                raise RuntimeError(f"{self.name} is closed")
            self._pending.append((item, future, announcement))
            self._cond.notify_all()
        return future.result()

    def _withdraw(self, announcement: Announcement) -> None:
        # with self._cond held
        if announcement.open:
            announcement.open = False
            self.expected = max(0, self.expected - 1)
            self._cond.notify_all()

    def close(self, timeout_s: float = 30.0) -> None:
        """Run what is waiting, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=timeout_s)

    def _take(self) -> list[tuple[T, cf.Future[R], Announcement | None]] | None:
        with self._cond:
            while not self._pending and not self._closed:
                self._cond.wait()
            if self._closed and not self._pending:
                return None
            if self.window_s > 0:
                deadline = time.monotonic() + self.window_s
                wanted = self.expected if self.max_items <= 0 else min(self.expected, self.max_items)
                while len(self._pending) < wanted and not self._closed:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            cut = len(self._pending) if self.max_items <= 0 else self.max_items
            batch, self._pending = self._pending[:cut], self._pending[cut:]
            for _, _, announcement in batch:
                if announcement is not None:  # running now: its caller is no longer one to wait for
                    self._withdraw(announcement)
            return batch

    def _loop(self) -> None:
        while (batch := self._take()) is not None:
            items = [item for item, _, _ in batch]
            try:
                results: Sequence[R | BaseException] = self.run(items)
                if len(results) != len(items):
                    raise RuntimeError(f"{self.name}: {len(results)} results for {len(items)} items")
            except BaseException as exc:  # every caller of the failed batch sees it; the loop survives
                results = [exc] * len(items)
            self.batches += 1
            self.items += len(items)
            for (_, future, _), result in zip(batch, results, strict=True):
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)


class Announcement:
    """A caller counted in its batcher's :attr:`WindowBatcher.expected` (from :meth:`WindowBatcher.announce`) until
    the batch that holds its item starts, or it :meth:`withdraw` s; withdrawing again after either does nothing."""

    def __init__(self, batcher: WindowBatcher[Any, Any]) -> None:
        self.batcher = batcher
        self.open = True

    def withdraw(self) -> None:
        with self.batcher._cond:
            self.batcher._withdraw(self)


__all__ = ["Announcement", "WindowBatcher"]
