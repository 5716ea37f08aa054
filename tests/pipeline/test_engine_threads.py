"""Engines used from many threads at once (the service's executor workers, :sync slots and live sessions): every
engine on a device gives what it gives alone, including while other engines load their models and capture their
CUDA graphs from cold, and nothing fails.

Issue 18: on an H100 two :sync slots' engines warming up at once failed their CUDA-graph captures and a request
("operation not permitted when stream is capturing", "lazy wrapper should be called at most once"); engines on one
CUDA device now take turns (faceweave/device.py ``engine_lock``)."""

from __future__ import annotations

import logging
import threading

import numpy as np
import pytest
import torch

from faceweave.pipeline.engine import SwapEngine, to_tensor, to_uint8
from faceweave.pipeline.image import swap_image
from faceweave.settings import SwapSettings


def test_engines_in_threads_from_cold_give_what_they_give_alone(media: type, device: torch.device,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    source, astronaut = media.rgb("grace_hopper.jpg"), media.rgb("astronaut.png")
    targets = [astronaut, media.rgb("obama2.jpg"), np.ascontiguousarray(astronaut[:400, 50:])]
    # different settings: separate engines, each loading its models and capturing its graphs on first use
    engines = [SwapEngine(SwapSettings(device=device.type, blend=blend)) for blend in ("laplacian", "feather")]
    engines.append(SwapEngine(SwapSettings(device=device.type, blend="laplacian", colour_transfer="none")))
    start = threading.Barrier(len(engines) + 1)
    results: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def run(k: int, engine: SwapEngine) -> None:
        try:
            start.wait(timeout=60)
            sources = engine.prepare_sources([source])
            results[k] = [swap_image(sources, target, engine)[0] for target in targets]
        except BaseException as exc:  # noqa: BLE001 - reported below, with the thread's engine
            errors.append(exc)

    def copies() -> None:
        # device work outside any engine, as a request's upload and download do, beside the captures
        try:
            start.wait(timeout=60)
            for _ in range(40):
                to_uint8(to_tensor(astronaut, device) * 0.5)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    caplog.set_level(logging.WARNING, logger="faceweave")
    threads = [threading.Thread(target=run, args=(k, e)) for k, e in enumerate(engines)]
    threads.append(threading.Thread(target=copies))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors
    assert "capture failed" not in caplog.text

    for k, engine in enumerate(engines):  # again, one thread, warm: the same images
        sources = engine.prepare_sources([source])
        for target, got in zip(targets, results[k], strict=True):
            alone = swap_image(sources, target, engine)[0]
            diff = np.abs(got.astype(int) - alone.astype(int)).max(-1)
            assert diff.max() <= 2, (k, int(diff.max()), int((diff > 0).sum()))
            assert (got != target).any(-1).mean() > 0.01  # it did swap
