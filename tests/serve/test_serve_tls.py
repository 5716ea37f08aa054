"""`faceweave serve --ssl-certfile … --ssl-keyfile …` answers over HTTPS (self-signed certificate, 127.0.0.1)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def test_serve_over_tls(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    exe = shutil.which("faceweave", path=str(Path(sys.executable).parent))
    cmd = [exe] if exe else [sys.executable, "-m", "faceweave.serve"]
    cmd += ["serve", "--port", str(port), "--data-dir", str(tmp_path / "data"),
            "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)]  # fmt: skip
    env = {**os.environ, "FACEWEAVE_WARMUP": "false"}
    trust = ssl.create_default_context(cafile=str(cert))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "server exited"
            try:
                r = httpx.get(f"https://127.0.0.1:{port}/healthz", verify=trust, timeout=2)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "no HTTPS answer"
                time.sleep(0.1)
        assert r.status_code == 200 and r.json() == {"status": "ok"}
        try:  # plain HTTP on the TLS port does not get an answer
            plain = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code
        except httpx.HTTPError:
            plain = None
        assert plain != 200
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
