"""Helpers for the service tests: an app on a temp folder, driven in-process (httpx ASGITransport + lifespan)."""

from __future__ import annotations

import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from asgi_lifespan import LifespanManager

from faceweave.data import media_path
from faceweave.serve.app import create_app
from faceweave.serve.auth import create_api_key
from faceweave.serve.deps import Service
from faceweave.serve.settings import ServiceSettings


class Harness:
    """An app, its service object and a client; ``key(tenant)`` makes auth headers for a tenant."""

    def __init__(self, app: Any, client: httpx.AsyncClient) -> None:
        self.app, self.client = app, client

    @property
    def svc(self) -> Service:
        return self.app.state.service  # type: ignore[no-any-return]

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {create_api_key(self.svc.store, tenant)}"}


@contextlib.asynccontextmanager
async def running_app(tmp: Path, **kwargs: Any) -> AsyncIterator[Harness]:
    app_kwargs = {k: kwargs.pop(k) for k in ("job_function", "warmup") if k in kwargs}
    kwargs.setdefault("rate_limit_per_minute", 60_000)  # tests poll; the rate-limit test sets its own
    kwargs.setdefault("rate_limit_burst", 1_000)
    settings = ServiceSettings(data_dir=tmp / "data", warmup=False, **kwargs)
    app = create_app(settings, **app_kwargs)
    async with LifespanManager(app, startup_timeout=60, shutdown_timeout=60) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=("127.0.0.1", 50123))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=120) as client:
            yield Harness(app, client)


def swap_form(
    sources: list[tuple[str, bytes]],
    target: tuple[str, bytes],
    *,
    consent: bool | None = True,
    settings: dict[str, Any] | None = None,
    **fields: str,
) -> tuple[list[tuple[str, tuple[str, bytes, str]]], dict[str, str]]:
    """httpx ``files=`` and ``data=`` for a swap request (declared content types are deliberately generic)."""
    files = [("sources", (name, data, "application/octet-stream")) for name, data in sources]
    files.append(("target", (target[0], target[1], "application/octet-stream")))
    data = dict(fields)
    if consent is not None:
        data["consent"] = "true" if consent else "false"
    if settings is not None:
        data["settings"] = json.dumps(settings)
    return files, data


async def wait_for_state(client: httpx.AsyncClient, job_id: str, headers: dict[str, str],
                         states: tuple[str, ...] = ("succeeded", "failed", "cancelled"),
                         timeout_s: float = 120.0) -> dict[str, Any]:  # fmt: skip
    """Poll the job until it is in one of ``states`` (bounded)."""
    import anyio

    with anyio.fail_after(timeout_s):
        while True:
            r = await client.get(f"/v1/swaps/{job_id}", headers=headers)
            assert r.status_code == 200, r.text
            if r.json()["state"] in states:
                return r.json()  # type: ignore[no-any-return]
            await anyio.sleep(0.05)


def carphone_clip(path: Path, frames: int) -> Path:
    """carphone's first ``frames`` frames (a real face, 176×144, 30 fps) as an H.264 MP4 at ``path``."""
    import av

    with av.open(str(media_path("carphone_pristine.mp4"))) as src, av.open(str(path), "w") as dst:
        stream = dst.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 176, 144, "yuv420p"
        stream.options = {"crf": "18", "preset": "ultrafast"}
        for frame in itertools.islice(src.decode(video=0), frames):
            for packet in stream.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in stream.encode():
            dst.mux(packet)
    return path


def count_engines_built(monkeypatch: Any) -> list[Any]:
    """Patch :class:`SwapEngine` so that every engine built from now on (for the test's duration) is appended to the
    returned list: how many copies of the models a service made."""
    from faceweave.pipeline import engine as engine_module

    built: list[Any] = []
    real_init = engine_module.SwapEngine.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        built.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(engine_module.SwapEngine, "__init__", counting_init)
    return built
