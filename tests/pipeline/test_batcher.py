"""WindowBatcher: what arrives while a batch runs is the next batch; the window waits only for expected callers;
per-item errors reach their own caller, a failed batch reaches all of its callers and the thread survives."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from faceweave.pipeline.batcher import WindowBatcher


def test_items_arriving_during_a_batch_form_the_next_one() -> None:
    started, release = threading.Event(), threading.Event()
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int | BaseException]:
        batches.append(items)
        if items == [0]:
            started.set()
            release.wait(10)
        return [ValueError(f"odd {i}") if i % 2 else i * 10 for i in items]

    batcher: WindowBatcher[int, int] = WindowBatcher(run, window_s=0.0, name="test batcher")
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(batcher.submit, 0)
        assert started.wait(10)
        rest = [pool.submit(batcher.submit, i) for i in range(1, 6)]
        while len(batcher._pending) < 5:  # all five wait behind the running batch
            time.sleep(0.01)
        release.set()
        assert first.result(10) == 0
        for i, fut in zip(range(1, 6), rest, strict=True):
            if i % 2:
                with pytest.raises(ValueError, match=f"odd {i}"):
                    fut.result(10)
            else:
                assert fut.result(10) == i * 10
    assert batches[0] == [0] and sorted(batches[1]) == [1, 2, 3, 4, 5] and len(batches) == 2
    assert (batcher.batches, batcher.items) == (2, 6)
    batcher.close()
    with pytest.raises(RuntimeError, match="test batcher is closed"):
        batcher.submit(1)


def test_window_waits_for_expected_callers_and_a_failed_batch_fails_all() -> None:
    batches: list[list[int]] = []

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        if 99 in items:
            raise OSError("broken batch")
        return items

    batcher: WindowBatcher[int, int] = WindowBatcher(run, window_s=5.0, name="windowed", max_items=3)
    batcher.expect(3)
    with ThreadPoolExecutor(4) as pool:
        futs = [pool.submit(batcher.submit, i) for i in (1, 2)]
        time.sleep(0.2)
        assert batches == []  # two of three expected: the window holds the batch
        futs.append(pool.submit(batcher.submit, 3))
        assert [f.result(10) for f in futs] == [1, 2, 3]
        assert sorted(batches[0]) == [1, 2, 3]
        batcher.expect(-3)
        t0 = time.monotonic()
        assert batcher.submit(4) == 4 and time.monotonic() - t0 < 2  # nobody else expected: no wait
        bad = [pool.submit(batcher.submit, i) for i in (99,)]
        with pytest.raises(OSError, match="broken batch"):
            bad[0].result(10)
        assert batcher.submit(5) == 5  # the thread survived
    batcher.close()


def test_an_announced_caller_stops_being_expected_once_its_batch_runs() -> None:
    # a :sync request is expected from its upload until its batch starts, not while it marks and encodes its
    # result afterwards (it would hold the next batch's window open for nothing)
    started, release = threading.Event(), threading.Event()

    def run(items: list[int]) -> list[int | BaseException]:
        started.set()
        release.wait(10)
        return items

    batcher: WindowBatcher[int, int] = WindowBatcher(run, window_s=0.0, name="test batcher")
    first, second = batcher.announce(), batcher.announce()
    assert batcher.expected == 2
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(batcher.submit, 7, first)
        assert started.wait(10)
        assert batcher.expected == 1  # taken back as its batch started: only `second` is still coming
        first.withdraw()  # after that: nothing more to take back
        assert batcher.expected == 1
        release.set()
        assert result.result(10) == 7
    second.withdraw()
    second.withdraw()
    assert batcher.expected == 0
    batcher.close()
