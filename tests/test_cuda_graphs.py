"""CUDA-graph replays from several streams (issue 19: the video stream swaps on a stream of its own): replays of
one cache, or of caches sharing a :class:`GraphPool`, keep their order across streams, so their shared static
buffers and pool memory are never used by two of them at once."""

from __future__ import annotations

import pytest
import torch

from faceweave.cuda_graphs import GraphCache, GraphPool


def _slow(x: torch.Tensor) -> tuple[torch.Tensor]:
    """Long enough on the device that an unordered replay on another stream would overwrite its input under it."""
    y = x
    for _ in range(64):
        y = torch.tanh(y * 1.01 + 0.1)
    return (y,)


def _double(x: torch.Tensor) -> tuple[torch.Tensor]:
    return (x * 2 + 1,)


def test_replays_on_two_streams_keep_their_order(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA graphs need a CUDA device")
    pool = GraphPool()
    slow, double = GraphCache(_slow, pool), GraphCache(_double, pool)
    streams = [torch.cuda.Stream(device), torch.cuda.Stream(device)]
    inputs = [torch.full((4, 1 << 18), float(k) / 8, device=device) for k in range(8)]
    outs = []
    for k, x in enumerate(inputs):  # alternate streams; every call reuses the same static buffers
        with torch.cuda.stream(streams[k % 2]):
            outs.append((slow("k", [x])[0], double("k", [x])[0]))
    torch.cuda.synchronize(device)
    for x, (a, b) in zip(inputs, outs, strict=True):
        torch.testing.assert_close(a, _slow(x)[0])
        torch.testing.assert_close(b, _double(x)[0])


def test_a_pool_orders_streams_on_the_device_only(device: torch.device) -> None:
    if device.type != "cuda":
        pytest.skip("CUDA streams need a CUDA device")
    pool = GraphPool()
    first, second = torch.cuda.Stream(device), torch.cuda.Stream(device)
    with torch.cuda.stream(first):
        x = torch.ones(1 << 22, device=device)
        for _ in range(32):
            x = torch.tanh(x)
        pool.order.follow(device)
    with torch.cuda.stream(second):
        pool.order.follow(device)  # the second stream now waits for the first's work, the host does not
        done = torch.cuda.Event()
        done.record(second)
    done.synchronize()
    assert first.query()  # what the second stream waited for is finished
