"""``faceweave models fetch`` against a local HTTP server on 127.0.0.1: full download, resume after a cut,
corrupted payload, server down, and no network use anywhere else."""

from __future__ import annotations

import hashlib
import http.server
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from faceweave.errors import InvalidOption, ModelDownloadError, ModelIntegrityError, ModelMissing
from faceweave.models.cli import models_app
from faceweave.models.fetch import fetch_model
from faceweave.models.onnx_zoo import resolve_model_file
from faceweave.models.registry import all_specs, get_spec

PAYLOAD = bytes(range(256)) * 4096 + b"tail"  # ~1 MiB, not a multiple of the chunk size


@dataclass
class ServerState:
    payload: bytes = PAYLOAD
    cut_first_at: int | None = None  # drop the connection after this many bytes on the first full request
    honour_range: bool = True
    requests: list[str | None] = field(default_factory=list)  # Range header of each request


class _Handler(http.server.BaseHTTPRequestHandler):
    state: ServerState

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        st = self.state
        if self.path != "/model.onnx":
            self.send_error(404, "Not Found")
            return
        rng = self.headers.get("Range")
        st.requests.append(rng)
        data, start = st.payload, 0
        if rng and st.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if st.cut_first_at is not None and len(st.requests) == 1:
            self.wfile.write(body[: st.cut_first_at])
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)  # the "cut": server drops the connection mid-file
            return
        self.wfile.write(body)


@pytest.fixture
def server() -> Iterator[tuple[str, ServerState]]:
    state = ServerState()
    handler = type("Handler", (_Handler,), {"state": state})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/model.onnx", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def _spec(url: str, payload: bytes = PAYLOAD):
    return replace(get_spec("inswapper_128"), url=url, sha256=hashlib.sha256(payload).hexdigest(), extra={})


def test_full_download(server, tmp_path: Path) -> None:
    url, state = server
    path = fetch_model(_spec(url), tmp_path)
    assert path == tmp_path / "inswapper_128.onnx" and path.read_bytes() == PAYLOAD
    assert state.requests == [None]
    assert list(tmp_path.iterdir()) == [path]  # no .part left
    fetch_model(_spec(url), tmp_path)  # verified copy present: no second request
    assert len(state.requests) == 1


def test_resume_after_cut(server, tmp_path: Path) -> None:
    url, state = server
    state.cut_first_at = 300_000
    path = fetch_model(_spec(url), tmp_path, timeout=5)
    assert path.read_bytes() == PAYLOAD
    assert state.requests[0] is None
    resumed_from = int(state.requests[1].split("=")[1].rstrip("-"))
    assert 0 < resumed_from <= 300_000 and len(state.requests) == 2


def test_resume_from_existing_part_file(server, tmp_path: Path) -> None:
    url, state = server
    (tmp_path / "inswapper_128.onnx.part").write_bytes(PAYLOAD[:12345])
    path = fetch_model(_spec(url), tmp_path)
    assert path.read_bytes() == PAYLOAD and state.requests == ["bytes=12345-"]


def test_server_ignoring_range_restarts_cleanly(server, tmp_path: Path) -> None:
    url, state = server
    state.honour_range = False
    (tmp_path / "inswapper_128.onnx.part").write_bytes(b"garbage" * 100)
    assert fetch_model(_spec(url), tmp_path).read_bytes() == PAYLOAD


def test_corrupted_payload_leaves_nothing(server, tmp_path: Path) -> None:
    url, state = server
    state.payload = PAYLOAD[:-4] + b"XXXX"
    with pytest.raises(ModelIntegrityError, match="expected"):
        fetch_model(_spec(url), tmp_path)  # hash of the good payload
    assert list(tmp_path.iterdir()) == []


def test_server_down_is_a_clear_error(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(ModelDownloadError, match=f"cannot reach http://127.0.0.1:{port}"):
        fetch_model(_spec(f"http://127.0.0.1:{port}/m.onnx"), tmp_path, timeout=2)
    assert not (tmp_path / "inswapper_128.onnx").exists()



def test_http_error_is_a_clear_error(server, tmp_path: Path) -> None:
    url, _ = server
    with pytest.raises(ModelDownloadError, match="HTTP 404"):
        fetch_model(_spec(url.replace("model.onnx", "nope.onnx")), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unpinned_model_needs_an_explicit_hash(server, tmp_path: Path) -> None:
    url, _ = server
    unpinned = replace(get_spec("inswapper_128"), url=url)
    with pytest.raises(InvalidOption, match="--sha256"):
        fetch_model(unpinned, tmp_path)
    path = fetch_model(unpinned, tmp_path, sha256=hashlib.sha256(PAYLOAD).hexdigest())
    assert path.read_bytes() == PAYLOAD


def test_cli_fetch_and_verify(server, tmp_path: Path, monkeypatch) -> None:
    url, _ = server
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    runner = CliRunner()
    result = runner.invoke(
        models_app, ["fetch", "inswapper_128", "--model-dir", str(tmp_path), "--url", url, "--sha256", digest]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "inswapper_128.onnx").read_bytes() == PAYLOAD
    result = runner.invoke(models_app, ["verify", "inswapper_128", "--model-dir", str(tmp_path)])
    assert result.exit_code == 0 and digest in result.output and "UNPINNED" in result.output


def test_no_network_outside_fetch(tmp_path: Path, monkeypatch, caplog, media) -> None:
    """Listing, locating, verifying and loading models must never open a connection."""
    caplog.set_level(logging.ERROR)
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("faceweave_test_onnx_graphs", Path(__file__).parent / "test_onnx_graphs.py")
    assert spec and spec.loader
    graphs = module_from_spec(spec)
    spec.loader.exec_module(graphs)
    graphs.build_swapper(tmp_path / "inswapper_128.onnx")
    graphs.build_arcface(tmp_path / "arcface_w600k_r50.onnx")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)

    from faceweave.analysis.onnx_detect import RetinaFaceDetector
    from faceweave.settings import SwapSettings
    from faceweave.swapper.onnx import load_swapper

    assert len(all_specs()) >= 15
    runner = CliRunner()
    for args in (["list"], ["list", "--json"], ["path"], ["path", "inswapper_128"], ["verify"]):
        result = runner.invoke(models_app, [*args, "--model-dir", str(tmp_path)])
        assert result.exit_code == 0, (args, result.output, result.exception)
    with pytest.raises(ModelMissing):
        resolve_model_file(get_spec("gfpgan_1.4"), tmp_path)
    settings = SwapSettings.build(swapper="inswapper_128", model_dir=str(tmp_path))
    swapper = load_swapper("inswapper_128", device=torch.device("cpu"), dtype=torch.float32, settings=settings)
    frame = torch.from_numpy(media.rgb("astronaut.png")).permute(2, 0, 1)[None].float() / 255
    face = RetinaFaceDetector("cpu").detect(frame)[0][0]
    swapper.swap(frame, [(0, face, swapper.prepare_source(frame, face))])
