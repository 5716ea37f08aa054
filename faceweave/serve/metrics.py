"""Prometheus metrics on a per-app registry (no process-global collectors): requests, job counts by state,
durations, queue depth and backlog age, frames per second, per-stage latency, and GPU utilisation/VRAM/temperature
via NVML when a GPU is present.

``deploy/prometheus/alerts.yml`` and ``deploy/grafana/faceweave.json`` query these names; ``tests/deploy`` checks
them against a live ``/metrics``, so renaming one here fails there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from faceweave.serve.store import QueueStats

log = logging.getLogger("faceweave.serve.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _JobStateCollector(Collector):
    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        running: Callable[[], int],
        queue: Callable[[], QueueStats] | None,
        clock: Callable[[], float],
    ) -> None:
        self.counts, self.running, self.queue, self.clock = counts, running, queue, clock

    def collect(self) -> Iterable[Metric]:
        try:
            counts = self.counts()
        except Exception:  # a scrape must not fail because the database hiccuped
            log.exception("cannot count jobs for /metrics")
            counts = {}
        jobs = GaugeMetricFamily("faceweave_jobs", "Jobs in the store by state", labels=["state"])
        for state, n in sorted(counts.items()):
            jobs.add_metric([state], n)
        yield jobs
        yield GaugeMetricFamily("faceweave_queue_depth", "Jobs waiting to run", value=counts.get("queued", 0))
        yield GaugeMetricFamily("faceweave_jobs_running_here", "Jobs running in this process", value=self.running())
        if self.queue is None:
            return
        try:
            stats = self.queue()
        except Exception:
            log.exception("cannot read the queue for /metrics")
            return  # absent rather than a made-up 0: the backlog alert then reads "no data", not "healthy"
        # The store is shared, so every API replica reports the same cluster-wide values: aggregate with max().
        age = 0.0 if stats.oldest_queued_at is None else max(0.0, self.clock() - stats.oldest_queued_at)
        yield GaugeMetricFamily(
            "faceweave_queue_oldest_age_seconds", "Age of the oldest queued job (0: none waits)", value=age
        )
        yield GaugeMetricFamily(
            "faceweave_jobs_fps", "Frames per second summed over running jobs (last progress report)",
            value=stats.running_fps,
        )  # fmt: skip


class _NvmlCollector(Collector):
    """GPU utilisation, memory and temperature from NVML (only registered when NVML finds a GPU)."""

    def __init__(self) -> None:
        import pynvml

        self.nvml = pynvml
        pynvml.nvmlInit()
        self.count = pynvml.nvmlDeviceGetCount()

    def collect(self) -> Iterable[Metric]:
        nv = self.nvml
        util = GaugeMetricFamily("faceweave_gpu_utilization_ratio", "GPU busy fraction", labels=["gpu"])
        used = GaugeMetricFamily("faceweave_gpu_memory_used_bytes", "GPU memory in use", labels=["gpu"])
        total = GaugeMetricFamily("faceweave_gpu_memory_total_bytes", "GPU memory", labels=["gpu"])
        temp = GaugeMetricFamily("faceweave_gpu_temperature_celsius", "GPU temperature", labels=["gpu"])
        for i in range(self.count):
            try:
                h = nv.nvmlDeviceGetHandleByIndex(i)
                rates = nv.nvmlDeviceGetUtilizationRates(h)
                mem = nv.nvmlDeviceGetMemoryInfo(h)
                util.add_metric([str(i)], rates.gpu / 100.0)
                used.add_metric([str(i)], float(mem.used))
                total.add_metric([str(i)], float(mem.total))
                temp.add_metric([str(i)], float(nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)))
            except nv.NVMLError:
                log.warning("NVML query failed for GPU %d", i)
        yield from (util, used, total, temp)


def gpu_count() -> int:
    """Number of NVIDIA GPUs NVML sees (0 without a driver)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return int(pynvml.nvmlDeviceGetCount())
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return 0


class ServiceMetrics:
    """All metrics of one app instance."""

    def __init__(
        self,
        counts: Callable[[], dict[str, int]],
        running: Callable[[], int],
        queue: Callable[[], QueueStats] | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``counts``: jobs by state; ``running``: jobs running in this process; ``queue``: the store's
        :meth:`~faceweave.serve.store.SqlJobStore.queue_stats` (backlog age and fps; without it those two are not
        exported); ``clock``: wall time, the clock ``queue_stats`` timestamps are on."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "faceweave_http_requests", "HTTP requests", ["method", "route", "status"], registry=self.registry
        )
        self.request_seconds = Histogram(
            "faceweave_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            registry=self.registry,
        )  # fmt: skip
        self.jobs_finished = Counter(
            "faceweave_jobs_finished", "Jobs that reached a final state", ["state"], registry=self.registry
        )
        self.job_seconds = Histogram(
            "faceweave_job_duration_seconds", "Run time of finished jobs", ["kind", "state"], registry=self.registry,
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
        )  # fmt: skip
        self.stage_seconds = Histogram(
            "faceweave_stage_duration_seconds", "Time spent per pipeline stage", ["stage"], registry=self.registry,
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
        )  # fmt: skip
        # live sessions (serve/routes/live.py): open sessions, frames by fate, swapped fps, per-frame latency
        self.live_sessions = Gauge("faceweave_live_sessions", "Live sessions open", registry=self.registry)
        self.live_sessions_started = Counter(
            "faceweave_live_sessions_started", "Live sessions started", registry=self.registry
        )
        self.live_sessions_refused = Counter(
            "faceweave_live_sessions_refused", "Live sessions refused because a limit was full", ["limit"],
            registry=self.registry,
        )  # fmt: skip
        self.live_frames = Counter(
            "faceweave_live_frames", "Live frames: received (in), handed back (out), dropped", ["fate"],
            registry=self.registry,
        )  # fmt: skip
        self.live_fps = Gauge(
            "faceweave_live_fps", "Swapped frames per second summed over live sessions (last 2 s)",
            registry=self.registry,
        )  # fmt: skip
        self.live_latency_seconds = Histogram(
            "faceweave_live_latency_seconds", "Live frame latency, arrival → swapped frame handed to the peer",
            registry=self.registry, buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1, 2.5),
        )  # fmt: skip
        self.registry.register(_JobStateCollector(counts, running, queue, clock))
        self.gpus = 0
        if gpu_count() > 0:
            try:
                collector = _NvmlCollector()
                self.registry.register(collector)
                self.gpus = collector.count
            except Exception:
                log.warning("NVML is present but unusable; GPU metrics are off")
        # Always exported: 0 says "no GPU (or no NVML)", where missing per-GPU series alone could mean a broken
        # collector. Per-tenant job counts are not exported: tenants are unbounded label values.
        gpus = Gauge("faceweave_gpus", "GPUs NVML sees (0 without a GPU or NVML)", registry=self.registry)
        gpus.set(self.gpus)

    def render(self) -> bytes:
        return generate_latest(self.registry)
