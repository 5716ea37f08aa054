"""deploy/prometheus: `promtool check rules` and `promtool test rules` (a firing and a quiet case per alert)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from deploy_tools import DEPLOY, run, tool

RULES = DEPLOY / "prometheus" / "alerts.yml"
TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
ALERTS = {"FaceweaveGpuMemoryHigh", "FaceweaveGpuHot", "FaceweaveJobFailureRateHigh", "FaceweaveQueueBacklogOld",
          "FaceweaveApi5xxRatioHigh"}  # fmt: skip


def _alert_rules() -> dict[str, dict[str, object]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def test_promtool_check_rules() -> None:
    out = run([tool("promtool"), "check", "rules", str(RULES)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in out.stdout


def test_promtool_unit_tests_pass() -> None:
    out = run([tool("promtool"), "test", "rules", TESTS.name], cwd=TESTS.parent)
    assert out.returncode == 0, out.stdout + out.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    assert set(_alert_rules()) == ALERTS
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for alert in ALERTS:
        mine = [c for c in cases if c["alertname"] == alert]
        assert any(c["exp_alerts"] for c in mine), f"{alert}: no case where it fires"
        assert any(not c["exp_alerts"] for c in mine), f"{alert}: no case where it stays quiet"


def test_vram_alert_is_the_90_percent_for_5_minutes_trigger() -> None:
    rule = _alert_rules()["FaceweaveGpuMemoryHigh"]
    assert rule["expr"] == "faceweave_gpu_memory_used_bytes / faceweave_gpu_memory_total_bytes > 0.9"
    assert rule["for"] == "5m"


def test_the_unit_tests_catch_a_changed_threshold(tmp_path: Path) -> None:
    # The promtool tests can fail: the same tests against rules whose VRAM threshold is 95 % do.
    shutil.copy(TESTS, tmp_path / TESTS.name)
    rules = RULES.read_text()
    assert rules.count("faceweave_gpu_memory_total_bytes > 0.9\n") == 1
    (tmp_path / RULES.name).write_text(rules.replace("total_bytes > 0.9\n", "total_bytes > 0.95\n"))
    out = run([tool("promtool"), "test", "rules", TESTS.name], cwd=tmp_path)
    assert out.returncode != 0 and "FaceweaveGpuMemoryHigh" in out.stdout + out.stderr
