"""Deployment files: systemd units verify, alert rules pass promtool, dashboards query real metrics."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, deploy_metric_names

from mobius_preview import metrics

SYSTEMD = REPO / "deploy" / "systemd"
PROMETHEUS = REPO / "deploy" / "prometheus"


def _needs(tool: str) -> str:
    path = shutil.which(tool)
    if not path:
        print(f"SKIP REASON: {tool} is not installed (.ci/run installs it on Debian)")
        pytest.skip(f"{tool} not installed")
    return path


def _units_here(tmp_path: Path) -> list[Path]:
    """The units with /opt/mobius-preview pointed at this checkout, so ExecStart exists."""
    copies = []
    for unit in sorted(SYSTEMD.glob("*.service")):
        copy = tmp_path / unit.name
        copy.write_text(unit.read_text().replace("/opt/mobius-preview", str(REPO)))
        copies.append(copy)
    return copies


def test_systemd_units_verify(tmp_path):
    tool = _needs("systemd-analyze")
    units = _units_here(tmp_path)
    assert {u.name for u in units} == {
        "mobius-preview-worker.service", "mobius-preview-flower.service",
        "mobius-preview-exporter.service", "mobius-preview-api.service"}
    proc = subprocess.run([tool, "verify", "--man=no", *map(str, units)],
                          capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    broken = tmp_path / "broken.service"
    broken.write_text(units[0].read_text().replace("Restart=always", "Restart=sometimes")
                      .replace("ExecStart=", "ExecStart=/nonexistent/bin/celery #"))
    proc = subprocess.run([tool, "verify", "--man=no", str(broken)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode != 0  # the check can fail


def test_units_are_hardened_and_outlast_a_render():
    from mobius_preview.config import load

    for unit in SYSTEMD.glob("*.service"):
        text = unit.read_text()
        for line in ("NoNewPrivileges=yes", "ProtectSystem=strict", "PrivateTmp=yes",
                     "ReadWritePaths=/var/lib/mobius-preview", "User=mobius", "Restart=always"):
            assert line in text, (unit.name, line)
    worker = (SYSTEMD / "mobius-preview-worker.service").read_text()
    stop = int(worker.split("TimeoutStopSec=")[1].split()[0])
    env = dict(line.split("=", 1) for line in (SYSTEMD / "mobius-preview.env.example").read_text()
               .splitlines() if line and not line.startswith("#"))
    assert stop > load(env).time_limit  # SIGTERM lets the longest render finish
    assert "KillSignal=SIGTERM" in worker


def test_alert_rules_check_and_unit_tests():
    tool = _needs("promtool")
    check = subprocess.run([tool, "check", "rules", "alerts.yml"], cwd=PROMETHEUS,
                           capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    test = subprocess.run([tool, "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS,
                          capture_output=True, text=True)
    assert test.returncode == 0, test.stdout + test.stderr
    rules = (PROMETHEUS / "alerts.yml").read_text()
    tests = (PROMETHEUS / "alerts_test.yml").read_text()
    for alert in ("MobiusWorkerDown", "MobiusQueueBacklog", "MobiusOldestJobTooOld", "MobiusFailureRate",
                  "MobiusDeadLettersGrowing", "MobiusRenderSlow", "MobiusBrokerDown"):
        assert f"alert: {alert}" in rules and f"alertname: {alert}" in tests
        assert f"### {alert}\n" in (REPO / "docs" / "operations.md").read_text()  # its runbook entry


def our_metric_names() -> set[str]:
    names = set()
    for family in metrics.registry().collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names.update(family.name + s for s in ("_bucket", "_count", "_sum"))
    return names


def test_dashboards_and_alerts_query_metrics_we_export():
    used = deploy_metric_names()
    ours = our_metric_names()
    missing = {n for n in used if n.startswith("mobius_preview_") and n not in ours}
    assert not missing, missing
    assert {n for n in used if n.startswith("mobius_preview_")}  # the check is not vacuous
    dashboard = json.loads((REPO / "deploy" / "grafana" / "mobius-preview.json").read_text())
    assert all(t["expr"] for p in dashboard["panels"] for t in p["targets"])
