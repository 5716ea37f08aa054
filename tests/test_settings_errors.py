"""Settings validation, device/dtype selection and the error table (exit codes / HTTP statuses are distinct)."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from faceweave import errors
from faceweave.device import resolve_device, resolve_dtype, to_device_async
from faceweave.settings import SwapSettings


def test_settings_are_frozen_and_reject_unknown_fields() -> None:
    s = SwapSettings()
    with pytest.raises(ValidationError):
        s.selector = "many"  # type: ignore[misc]
    with pytest.raises(errors.InvalidOption, match="colour"):
        SwapSettings.build(colour="red")
    with pytest.raises(errors.InvalidOption, match="selector"):
        SwapSettings.build(selector="all")
    with pytest.raises(errors.InvalidOption, match="device"):
        SwapSettings.build(device="gpu")


def test_exit_codes_and_codes_are_distinct() -> None:
    classes = [c for c in vars(errors).values()
               if isinstance(c, type) and issubclass(c, errors.FaceweaveError) and c is not errors.FaceweaveError]
    assert len({c.exit_code for c in classes}) == len(classes)
    assert len({c.code for c in classes}) == len(classes)
    assert all(400 <= c.http_status < 600 for c in classes)


def test_device_selection_never_assumes_cuda() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(errors.DeviceUnavailable):
            resolve_device("cuda:0")
    assert resolve_dtype("auto", torch.device("cpu")) is torch.float32
    with pytest.raises(errors.InvalidOption):
        resolve_dtype("float16", torch.device("cpu"))


def test_check_shape() -> None:
    errors.check_shape(torch.zeros(2, 3, 4, 5), ["B", "3", "H", "W"])
    with pytest.raises(errors.ShapeError, match=r"\(B, 3, H, W\)"):
        errors.check_shape(torch.zeros(2, 4, 4, 5), ["B", "3", "H", "W"])


def test_to_device_async_copies_host_values(device: torch.device) -> None:
    host = torch.arange(12, dtype=torch.float32).view(3, 4) / 7
    moved = to_device_async(host, device)
    assert moved.device.type == device.type and torch.equal(moved.cpu(), host)
    if device.type != "cpu":  # a copy: the caller may reuse its tensor at once (the pinned buffer is its own)
        host.add_(1)
        assert torch.equal(moved.cpu(), torch.arange(12, dtype=torch.float32).view(3, 4) / 7)
    assert to_device_async(moved, moved.device) is moved  # already there: no copy

