"""The Ray executor on real servers: a local Ray cluster of several nodes with fake GPUs, PostgreSQL, SeaweedFS S3,
and ``faceweave serve --executor ray`` as a process. Each fault test kills or stops a real process mid-job and
checks that the job completes with every frame and the audio, and that no finished segment was computed twice.

Ray binds every interface, so these run only inside a private network namespace; ``.ci/run`` runs them as
``unshare -n bash -c 'ip link set lo up; pytest -m integration …'``. Elsewhere they skip (or fail, with
FACEWEAVE_REQUIRE_RAY_TESTS=1)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

FRAMES, GOP, SEGMENT_FRAMES = 60, 15, 15  # 4 keyframe-aligned segments of 15 frames


def _require(ok: bool, why: str) -> None:
    if not ok:
        if os.environ.get("FACEWEAVE_REQUIRE_RAY_TESTS") == "1":
            pytest.fail(why)
        pytest.skip(why)


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from ray_services import in_private_netns

    _require(in_private_netns(), "Ray binds every interface: run in a private netns (unshare -n; see .ci/run)")
    try:
        import ray  # noqa: F401
    except ImportError:
        _require(False, "ray is not installed: pip install -e '.[ray]'")
    from ray_services import Postgres, RayCluster, SeaweedS3

    root = tmp_path_factory.mktemp("ray-it")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ["RAY_TMPDIR"] = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths are limited
    started: list[Any] = []
    try:
        pg = Postgres()
        started.append(pg)
        s3 = SeaweedS3(root / "s3")
        started.append(s3)
        cluster = RayCluster(gpu_nodes=2)
        started.append(cluster)
        yield {"pg": pg, "s3": s3, "cluster": cluster, "root": root, "video": _make_video(root / "clip.mp4")}
    finally:
        for thing in reversed(started):
            thing.close()


def _make_video(path: Path) -> Path:
    """carphone's first 60 frames, a keyframe every 15, with a 48 kHz AAC tone (the output must keep it)."""
    import av

    from faceweave.data import media_path

    with av.open(str(media_path("carphone_pristine.mp4"))) as src, av.open(str(path), "w") as dst:
        vs = dst.add_stream("libx264", rate=30)
        vs.width, vs.height, vs.pix_fmt = 176, 144, "yuv420p"
        vs.codec_context.gop_size = GOP
        vs.options = {"crf": "18", "preset": "ultrafast", "keyint_min": str(GOP), "sc_threshold": "0"}
        aus = dst.add_stream("aac", rate=48000)
        aus.layout = "mono"
        for frame in itertools.islice(src.decode(video=0), FRAMES):
            for p in vs.encode(frame.reformat(format="yuv420p")):
                dst.mux(p)
        for p in vs.encode():
            dst.mux(p)
        total = FRAMES * 48000 // 30
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(total) / 48000)).astype(np.float32)
        for k in range(0, total, 1024):
            af = av.AudioFrame.from_ndarray(tone[None, k : k + 1024], format="fltp", layout="mono")
            af.sample_rate, af.pts, af.time_base = 48000, k, Fraction(1, 48000)
            for p in aus.encode(af):
                dst.mux(p)
        for p in aus.encode(None):
            dst.mux(p)
    return path


class Run:
    """One test's API process (fresh actor namespace and storage prefix) and its helpers."""

    def __init__(self, services: dict[str, Any], name: str, *, actors: int = 0, extra_env: dict[str, str] | None = None,
                 s3_options: dict[str, Any] | None = None) -> None:  # fmt: skip
        import json

        from ray_services import Api

        from faceweave.serve.auth import create_api_key
        from faceweave.serve.store import SqlJobStore

        self.services, self.namespace = services, f"t-{name}-{uuid.uuid4().hex[:6]}"
        root = services["root"] / self.namespace
        root.mkdir()
        env = {**os.environ, "FACEWEAVE_STORAGE_OPTIONS": json.dumps(s3_options or services["s3"].options),
               "FACEWEAVE_RAY_NAMESPACE": self.namespace, "FACEWEAVE_RAY_ACTORS": str(actors),
               "FACEWEAVE_RAY_SEGMENT_FRAMES": str(SEGMENT_FRAMES), "FACEWEAVE_RAY_LEASE_S": "3",
               "FACEWEAVE_WARMUP": "false", "FACEWEAVE_AUTH": "required", "FACEWEAVE_RATE_LIMIT_PER_MINUTE": "100000",
               "FACEWEAVE_RATE_LIMIT_BURST": "10000", "FACEWEAVE_JSON_LOGS": "false", **(extra_env or {})}  # fmt: skip
        self.api = Api(root, env, ["--ray-address", services["cluster"].address, "--database", services["pg"].url,
                                   "--storage", f"s3://faceweave/{self.namespace}"])  # fmt: skip
        self.store = SqlJobStore(services["pg"].url)
        self.headers = {"Authorization": f"Bearer {create_api_key(self.store, 'acme')}"}

    def submit(self, target: Path) -> str:
        from faceweave.data import media_path

        files = [("sources", ("s.jpg", media_path("obama.jpg").read_bytes(), "application/octet-stream")),
                 ("target", (target.name, target.read_bytes(), "application/octet-stream"))]  # fmt: skip
        r = httpx.post(f"{self.api.base}/v1/swaps", files=files, data={"consent": "true"}, headers=self.headers,
                       timeout=60)  # fmt: skip
        assert r.status_code == 202, r.text
        return str(r.json()["id"])

    def segments(self, job_id: str) -> list[Any]:
        from faceweave.serve.segment_store import SqlSegmentStore

        return SqlSegmentStore(self.store.engine).segments(job_id)

    def wait_segments(self, job_id: str, cond: Callable[[list[Any]], bool], timeout_s: float = 180) -> list[Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            segs = self.segments(job_id)
            if segs and cond(segs):
                return segs
            time.sleep(0.1)
        raise AssertionError(f"segments never reached the condition: {self.segments(job_id)}\n{self.api.log()[-3000:]}")

    def wait_done(self, job_id: str, timeout_s: float = 240) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            job = self.store.get_job(job_id)
            if job is not None and job.state.finished:
                assert job.state.value == "succeeded", (job, self.api.log()[-4000:])
                return {"job": job, "segments": self.segments(job_id)}
            time.sleep(0.2)
        job = self.store.get_job(job_id)
        raise AssertionError(f"job not finished in {timeout_s} s: {job}\n{self.api.log()[-4000:]}")

    def result(self, job_id: str, dest: Path) -> Path:
        r = httpx.get(f"{self.api.base}/v1/swaps/{job_id}/result", headers=self.headers, timeout=60)
        assert r.status_code == 200, r.text
        dest.write_bytes(r.content)
        return dest

    def actor(self, name: str) -> Any:
        import ray

        return ray.get_actor(name, namespace=self.namespace)

    def close(self) -> None:
        import ray

        self.api.kill()
        for i in range(8):  # the detached actors of this test hold fake GPUs: free them for the next test
            with contextlib.suppress(ValueError):  # no such actor
                ray.kill(self.actor(f"faceweave-swap-{i}"), no_restart=True)
        self.store.close()


@pytest.fixture
def run_factory(services: dict[str, Any]) -> Iterator[Callable[..., Run]]:
    runs: list[Run] = []

    def make(name: str, **kw: Any) -> Run:
        runs.append(Run(services, name, **kw))
        return runs[-1]

    yield make
    for r in runs:
        r.close()


def _decoded(path: Path) -> tuple[list[np.ndarray], bool]:
    import av

    with av.open(str(path)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        has_audio = bool(c.streams.audio)
    return frames, has_audio


def _check_complete(run: Run, job_id: str, tmp: Path) -> dict[str, Any]:
    """The job succeeded, its output has every input frame and the audio, and no segment finished twice."""
    out = run.wait_done(job_id)
    frames, has_audio = _decoded(run.result(job_id, tmp / f"{job_id}.mp4"))
    assert len(frames) == FRAMES and has_audio
    segs = out["segments"]
    assert len(segs) == FRAMES // SEGMENT_FRAMES and all(s.state == "done" for s in segs), [
        (s.index, s.state, s.attempts, s.completions) for s in segs]
    assert [s.completions for s in segs] == [1] * len(segs), segs  # no finished segment redone
    assert all(s.attempts >= 1 and s.result_key for s in segs), [(s.index, s.attempts, s.result_key) for s in segs]
    assert sum(s.frames_done for s in segs) == FRAMES
    return out


# --- tests -------------------------------------------------------------------------------------------------------
def test_split_over_two_actors_on_two_nodes_equals_one_actor(run_factory: Callable[..., Run], services: dict[str, Any],
                                                             tmp_path: Path) -> None:  # fmt: skip
    # the invisible watermark carries each job's id, so two jobs differ by design: compare the swaps without it
    no_mark = {"FACEWEAVE_WATERMARK": "false"}
    one = run_factory("one", actors=1, extra_env=no_mark)
    one.api.start()
    job1 = one.submit(services["video"])
    _check_complete(one, job1, tmp_path)
    frames_one, _ = _decoded(tmp_path / f"{job1}.mp4")
    one.close()

    two = run_factory("two", actors=2, extra_env=no_mark)
    two.api.start()
    job2 = two.submit(services["video"])
    out = _check_complete(two, job2, tmp_path)
    frames_two, _ = _decoded(tmp_path / f"{job2}.mp4")
    assert {s.worker for s in out["segments"]} == {"faceweave-swap-0", "faceweave-swap-1"}
    import ray

    nodes = {ray.get(two.actor(n).ping.remote())["node"] for n in ("faceweave-swap-0", "faceweave-swap-1")}
    assert len(nodes) == 2  # one actor per fake GPU node
    assert len(frames_one) == len(frames_two) == FRAMES
    assert all(np.array_equal(a, b) for a, b in zip(frames_one, frames_two, strict=True))
    assert not np.array_equal(frames_two[0], _decoded(services["video"])[0][0])  # really swapped


def test_actor_killed_mid_segment(run_factory: Callable[..., Run], services: dict[str, Any], tmp_path: Path) -> None:
    import ray

    run = run_factory("kill-actor", actors=2)
    run.api.start()
    job = run.submit(services["video"])
    segs = run.wait_segments(job, lambda s: any(x.state == "done" for x in s) and any(x.state == "running" for x in s))
    victim = next(s for s in segs if s.state == "running")
    pid = ray.get(run.actor(victim.worker).ping.remote())["pid"]
    os.kill(pid, signal.SIGKILL)  # the actor's worker process, mid-segment
    out = _check_complete(run, job, tmp_path)
    redone = next(s for s in out["segments"] if s.index == victim.index)
    assert redone.attempts >= 2  # the killed segment ran again (on the restarted actor or the other one)
    done_before = {s.index for s in segs if s.state == "done"}
    assert all(s.attempts == 1 for s in out["segments"] if s.index in done_before)


def test_node_removed_mid_job(run_factory: Callable[..., Run], services: dict[str, Any], tmp_path: Path) -> None:
    import ray

    cluster = services["cluster"]
    extra = cluster.add_gpu_node()  # a third fake-GPU node, removed mid-job (a spot node reclaimed)
    try:
        run = run_factory("node-gone", actors=3)
        run.api.start()
        job = run.submit(services["video"])
        victim_node = None
        deadline = time.monotonic() + 120
        while victim_node is None and time.monotonic() < deadline:
            segs = run.segments(job)
            for s in segs:
                if s.state == "running" and s.worker:
                    node = ray.get(run.actor(s.worker).ping.remote())["node"]
                    if node == extra.node_id:
                        victim_node = node
            time.sleep(0.05)
        assert victim_node is not None, "no segment ran on the extra node"
        cluster.cluster.remove_node(extra, allow_graceful=False)
        extra = None
        _check_complete(run, job, tmp_path)
    finally:
        if extra is not None:
            cluster.cluster.remove_node(extra, allow_graceful=False)


def test_api_restarted_mid_job(run_factory: Callable[..., Run], services: dict[str, Any], tmp_path: Path) -> None:
    run = run_factory("api-restart", actors=2)
    run.api.start()
    job = run.submit(services["video"])
    segs = run.wait_segments(job, lambda s: sum(x.state == "done" for x in s) >= 2)
    run.api.kill()  # kill -9 of the API process (its Ray driver too)
    done_before = {s.index for s in segs if s.state == "done"}
    run.api.start()  # requeues the job once its heartbeat is older than the lease (3 s) and resumes it
    out = _check_complete(run, job, tmp_path)
    assert out["job"].attempts == 2
    assert all(s.attempts == 1 for s in out["segments"] if s.index in done_before)  # never recomputed


def test_postgres_stopped_for_5_s(run_factory: Callable[..., Run], services: dict[str, Any], tmp_path: Path) -> None:
    run = run_factory("pg-stop", actors=2)
    run.api.start()
    job = run.submit(services["video"])
    run.wait_segments(job, lambda s: any(x.state == "done" for x in s))
    services["pg"].stop()
    try:
        t0 = time.monotonic()
        r = httpx.get(f"{run.api.base}/v1/swaps", headers=run.headers, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "database_unavailable", r.text
        time.sleep(max(0.0, 5 - (time.monotonic() - t0)))
    finally:
        services["pg"].start()
    _check_complete(run, job, tmp_path)
    assert httpx.get(f"{run.api.base}/v1/swaps", headers=run.headers, timeout=30).status_code == 200  # recovered


def test_store_sessions_commit_synchronously(services: dict[str, Any]) -> None:
    """The throw-away server runs ``synchronous_commit = off`` and is stopped with ``-m immediate`` (a crash): an
    acknowledged commit survives that only when the store's sessions ask for synchronous commits."""
    import psycopg
    from sqlalchemy import text

    from faceweave.serve.store import make_engine

    with psycopg.connect(services["pg"].url.replace("+psycopg", "")) as plain:
        assert plain.execute("SHOW synchronous_commit").fetchone() == ("off",)  # the server's default here
    engine = make_engine(services["pg"].url)
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SHOW synchronous_commit")).scalar() == "on"
    finally:
        engine.dispose()


def test_s3_stopped_for_5_s(run_factory: Callable[..., Run], services: dict[str, Any], tmp_path: Path) -> None:
    run = run_factory("s3-stop", actors=2)
    run.api.start()
    job = run.submit(services["video"])
    run.wait_segments(job, lambda s: any(x.state == "done" for x in s))
    services["s3"].stop()
    time.sleep(5)
    services["s3"].start()
    _check_complete(run, job, tmp_path)


def test_wrong_s3_credentials_give_a_clear_error(run_factory: Callable[..., Run], services: dict[str, Any]) -> None:
    run = run_factory("bad-creds", s3_options={**services["s3"].options, "secret": "not-the-secret-7f3a"})
    with pytest.raises(AssertionError, match="the API exited"):
        run.api.start(timeout_s=60)
    log = run.api.log()
    assert "refused access" in log and "check the S3 key and secret" in log, log[-3000:]
    assert "not-the-secret-7f3a" not in log  # the message names the storage, never the secret


def test_image_jobs_are_batched(run_factory: Callable[..., Run], services: dict[str, Any]) -> None:
    """Image jobs from several requests arriving together reach one actor as one call (a batch of more than one),
    and their model forwards run together: the actor counts the calls on its real engine (CountingEngine) and a
    batch of k jobs takes one analysis call and one swap call (same target size: one crop size), not 2k + k."""
    import re
    from concurrent.futures import ThreadPoolExecutor

    from faceweave.data import media_path

    # 2 s: the four uploads, sent together, land well within it even on a loaded 2-core machine
    run = run_factory("images", actors=1, extra_env={"FACEWEAVE_RAY_BATCH_WINDOW_S": "2.0"})
    run.api.start()
    target = services["root"] / "target.jpg"
    target.write_bytes(media_path("grace_hopper.jpg").read_bytes())
    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(lambda _: run.submit(target), range(4)))
    for job_id in ids:
        assert run.wait_done(job_id)["job"].faces_swapped >= 1
    log = run.api.log()
    sizes = [int(n) for n in re.findall(r"image batch of (\d+) job", log)]
    assert sum(sizes) == 4 and max(sizes) >= 2, sizes
    ran = re.findall(r"(\d+) image job\(s\) ran as (\d+) engine call\(s\): analyze (\d+), swap (\d+)", log)
    assert sorted(int(k) for k, *_ in ran) == sorted(sizes), (ran, sizes)
    for jobs, total, analyze, swap in ran:
        assert (int(analyze), int(swap), int(total)) == (1, 1, 2), (jobs, total, analyze, swap)
