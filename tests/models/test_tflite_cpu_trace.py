"""GraphNet on the CPU: from its CPU_TRACE_AFTER-th call of a shape on, the ops are replayed from a TorchScript trace
with bit-identical outputs, for any batch size; a one-shot call stays eager; the switch turns it off. Real face
crops (the bundled faces), every net of the engine."""

from __future__ import annotations

import pytest
import torch

from faceweave.models.blazeface import load_blazeface
from faceweave.models.facemesh import load_facemesh
from faceweave.models.tflite_graph import CPU_TRACE_AFTER, GraphNet


@pytest.mark.parametrize("which", ["facemesh", "blazeface_full", "blazeface_short"])
def test_cpu_trace_is_bit_identical(which: str, crops: torch.Tensor) -> None:
    net: GraphNet = (load_facemesh().net if which == "facemesh" else
                     load_blazeface("full" if which == "blazeface_full" else "short").net)
    size = int(net.program["input_shape"][1])
    x = torch.nn.functional.interpolate(crops, size=(size, size), mode="bilinear", antialias=True) * 2 - 1
    with torch.inference_mode():
        for call in range(CPU_TRACE_AFTER + 3):
            batch = x[: 1 + call % 4]  # the trace is made at one batch size and replayed at others
            expected = net.run_eager(batch)
            got = net(batch)
            assert len(got) == len(expected)
            for a, b in zip(got, expected, strict=True):
                assert a.shape == b.shape and torch.equal(a, b), (which, call)
            assert len(net.traced) == (1 if call + 1 >= CPU_TRACE_AFTER else 0), call


def test_one_shot_stays_eager_and_switch_off(crops: torch.Tensor) -> None:
    net = load_blazeface("full").net
    with torch.inference_mode():
        net(crops[:1] * 2 - 1)
        assert not net.traced and sum(net.eager_calls.values()) == 1
        net.cpu_trace = False
        for _ in range(CPU_TRACE_AFTER + 1):
            net(crops[:1] * 2 - 1)
    assert not net.traced and sum(net.eager_calls.values()) == 1
