"""Backend failures: storage retried with backoff, credentials errors named clearly, the database's 503."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from faceweave.serve.resilience import (
    DatabaseUnavailable,
    RetryingStorage,
    StorageAccessDenied,
    retry_db,
)
from faceweave.serve.settings import ServiceSettings
from faceweave.serve.storage import FsspecStorage


def test_storage_retries_transient_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = RetryingStorage(f"file://{tmp_path / 'media'}", deadline_s=10)
    calls = {"n": 0}
    real = FsspecStorage.size

    def flaky(self: FsspecStorage, key: str) -> int:
        calls["n"] += 1
        if calls["n"] < 3:
            raise ConnectionError("endpoint unreachable")
        return real(self, key)

    (tmp_path / "src.bin").write_bytes(b"x" * 10)
    assert storage.upload(tmp_path / "src.bin", "t/j/a.bin") == 10
    monkeypatch.setattr(FsspecStorage, "size", flaky)
    assert storage.size("t/j/a.bin") == 10 and calls["n"] == 3
    with pytest.raises(FileNotFoundError):  # not transient: no retry loop
        storage.download("t/j/missing.bin", tmp_path / "out.bin")


def test_storage_gives_up_and_names_credentials_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    storage = RetryingStorage(f"file://{tmp_path / 'media'}", deadline_s=0.5)

    def denied(self: FsspecStorage, key: str) -> Any:
        raise PermissionError("InvalidAccessKeyId")

    monkeypatch.setattr(FsspecStorage, "open_write", denied)
    with pytest.raises(StorageAccessDenied, match="refused access") as info:
        storage.check()
    assert info.value.hint is not None and "key and secret" in info.value.hint

    def down(self: FsspecStorage, key: str) -> Any:
        raise ConnectionError("down")

    monkeypatch.setattr(FsspecStorage, "open_write", down)
    with pytest.raises(Exception, match="failed for"):
        storage.check()


def test_retry_db_waits_for_the_database() -> None:
    calls = {"n": 0}

    def once_down() -> str:
        calls["n"] += 1
        if calls["n"] == 1:
            raise OperationalError("SELECT 1", {}, Exception("connection refused"))
        return "ok"

    assert retry_db(once_down, what="test") == "ok" and calls["n"] == 2

    def always_down() -> str:
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    with pytest.raises(DatabaseUnavailable):
        retry_db(always_down, what="test", deadline_s=0.3)
    with pytest.raises(ValueError):  # not a connection error: raised at once
        retry_db(lambda: (_ for _ in ()).throw(ValueError("bug")), what="test")


def test_ray_settings(tmp_path: Path) -> None:
    s = ServiceSettings(data_dir=tmp_path, executor="ray", ray_actors=2, ray_segment_frames=60)
    assert s.executor == "ray" and s.ray_actors == 2
    with pytest.raises(ValueError, match="shared database"):
        ServiceSettings(data_dir=tmp_path, executor="ray", ray_address="ray://head:10001")
