"""The Grafana dashboard and the alert rules name only metrics that the app really exports (compared with a live
``/metrics`` of the app, with a fake NVML so that the GPU collector runs on a machine without a GPU), and the JSON
logs carry the fields docs/deploy.md promises to a log collector."""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_tools import DEPLOY, ROOT

pytest.importorskip("fastapi", reason="the serve extra is not installed")
pytest.importorskip("asgi_lifespan", reason="the dev extra is not installed")

DASHBOARD = DEPLOY / "grafana" / "faceweave.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
# Exported by faceweave/serve/metrics.py from the store's queue_stats (the app hands it to ServiceMetrics).
QUEUE_METRICS = {"faceweave_queue_oldest_age_seconds", "faceweave_jobs_fps"}

_PROMQL_WORDS = {
    "sum", "max", "min", "avg", "count", "rate", "irate", "increase", "histogram_quantile", "by", "without", "and",
    "or", "unless", "on", "ignoring", "group_left", "group_right", "offset", "bool", "label_values", "abs", "clamp_min",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers, grouping labels, ranges and variables removed)."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", r"\1", expr)
    expr = re.sub(r"\$\{?\w+\}?", "", expr)  # Grafana variables
    expr = re.sub(r",\s*(instance|job|gpu|state|kind|stage|route|status|method)\s*\)", ")", expr)  # label_values' label
    words = set(re.findall(r"(?<![\w.])[A-Za-z_:][\w:]*", expr))
    return {w for w in words - _PROMQL_WORDS if not re.fullmatch(r"\d+\w*", w)}


def _dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p.get("targets", [])]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v["type"] == "query"]
    return exprs


def _alert_exprs() -> list[str]:
    return [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def _used() -> set[str]:
    return set().union(*map(metric_names, _dashboard_exprs() + _alert_exprs()))


def test_metric_name_parser() -> None:
    expr = ('histogram_quantile(0.95, sum by (le, kind) (rate(a_seconds_bucket{state="x", route!~"/a|/b"}[5m])))'
            " / on (instance) b_total offset 5m and label_values(c_gauge, instance)")  # fmt: skip
    assert metric_names(expr) == {"a_seconds_bucket", "b_total", "c_gauge"}
    assert metric_names("max(faceweave_queue_depth) > 600") == {"faceweave_queue_depth"}


def _fake_nvml() -> types.ModuleType:
    """Enough of pynvml for faceweave.serve.metrics' collector: one GPU, 95 % of 80 GiB used, 71 °C."""
    nv = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    nv.NVMLError = NVMLError  # type: ignore[attr-defined]
    nv.NVML_TEMPERATURE_GPU = 0  # type: ignore[attr-defined]
    nv.nvmlInit = lambda: None  # type: ignore[attr-defined]
    nv.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    nv.nvmlDeviceGetCount = lambda: 1  # type: ignore[attr-defined]
    nv.nvmlDeviceGetHandleByIndex = lambda i: i  # type: ignore[attr-defined]
    nv.nvmlDeviceGetUtilizationRates = lambda h: types.SimpleNamespace(gpu=63)  # type: ignore[attr-defined]
    total = 80 * 1024**3
    nv.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=int(total * 0.95), total=total)  # type: ignore[attr-defined]
    nv.nvmlDeviceGetTemperature = lambda h, sensor: 71  # type: ignore[attr-defined]
    return nv


def _serve_helpers() -> Any:
    spec = importlib.util.spec_from_file_location("serve_helpers", ROOT / "tests" / "serve" / "serve_helpers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def exported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Sample names a live ``/metrics`` of the app exports (every sample of each family the scrape declares)."""
    import anyio
    from prometheus_client.parser import text_string_to_metric_families

    import faceweave.serve.metrics as metrics_module

    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    monkeypatch.setattr(metrics_module, "gpu_count", lambda: 1)
    helpers = _serve_helpers()

    async def scrape() -> str:
        async with helpers.running_app(tmp_path, workers=1) as h:
            assert (await h.client.get("/healthz")).status_code == 200
            r = await h.client.get("/metrics")
            assert r.status_code == 200
            return str(r.text)

    text = anyio.run(scrape)
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    names = set()
    for family in text_string_to_metric_families(text):
        names |= {family.name + s for s in suffixes.get(family.type, ("",))}
        names |= {s.name for s in family.samples}
    assert "faceweave_gpu_memory_used_bytes" in names  # the fake NVML reached the real collector
    return names


def test_dashboard_and_alerts_query_only_exported_metrics(exported: set[str]) -> None:
    used = _used()
    assert {"faceweave_gpu_memory_used_bytes", "faceweave_http_requests_total"} <= used  # the parser found them
    missing = used - exported
    assert not missing, f"queried but not exported by the app: {sorted(missing)}"


def test_queue_age_and_fps_are_exported_by_the_app(exported: set[str]) -> None:
    assert exported >= QUEUE_METRICS
    assert _used() >= QUEUE_METRICS


def test_a_renamed_metric_would_be_caught(exported: set[str]) -> None:
    assert "faceweave_gpu_memory_used_byte" not in exported  # the comparison is by exact name
    assert metric_names("faceweave_gpu_memory_used_byte / faceweave_gpu_memory_total_bytes") - exported


def test_json_logs_carry_the_documented_fields() -> None:
    from faceweave.serve.logging import RedactingJsonFormatter, job_context

    table = re.search(r"^\| field \| content \|\n(?:\|.*\n)+", (ROOT / "docs" / "deploy.md").read_text(), re.M)
    assert table is not None, "docs/deploy.md has no log field table"
    documented = set(re.findall(r"^\| `(\w+)` \|", table.group(0), re.M))
    record = logging.LogRecord("faceweave.serve", logging.INFO, __file__, 1, "request", None, None)
    for key, value in {"method": "GET", "route": "/v1/swaps", "status": 200, "duration_ms": 1.5}.items():
        setattr(record, key, value)
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    with job_context("j1"):
        line = RedactingJsonFormatter().format(record)
    assert "\n" not in line  # one event per line for the collector
    out = json.loads(line)
    assert set(out) == documented, f"docs/deploy.md lists {sorted(documented)}, the logs carry {sorted(out)}"
    assert out["job_id"] == "j1" and out["level"] == "INFO" and out["ts"].endswith("Z")
