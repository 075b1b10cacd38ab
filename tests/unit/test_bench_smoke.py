"""Smoke check of the benchmark harness on fake benchmark modules: discovery, isolation of a failure,
table rendering, JSON writing with rotation, and bench-compare. Fast, no peers; never judges speed."""

from __future__ import annotations

import json
import sys
import types

import pytest

from tests.bench import compare, run
from tests.bench.common import row


@pytest.fixture
def fake_benchmarks(monkeypatch):
    """A package holding three fake modules: rows, a plain dict of metrics, and one that fails."""
    pkg = types.ModuleType("fakebench")
    pkg.__path__ = []
    mods = {
        "fakebench.bench_rows": lambda quick: {
            "rows": [row("fake", "ops/s", 300.0, "ops/s", peer=150.0, peer_name="peerd", goal=(">=", 200)),
                     row("fake", "memory", 130.0, "MB", goal=("<=", 120), better="lower", note="a | pipe")],
            "notes": ["quick" if quick else "full"]},
        "fakebench.bench_plain": lambda quick: {
            "packets_per_second": 1000, "ndpi_packets_per_second": 4000, "goal_packets_per_second": 500,
            "sqlite": {"queue_ms": {"first_page": 12.5}, "ok": True}, "detections": {"vpn": 3}},
        "fakebench.bench_broken": lambda quick: 1 / 0,
    }
    for name, fn in mods.items():
        m = types.ModuleType(name)
        m.run = fn  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, m)
    monkeypatch.setitem(sys.modules, "fakebench", pkg)
    return ["rows", "plain", "broken"]


def test_discover_finds_bench_modules(tmp_path):
    for name in ("bench_b.py", "bench_a.py", "common.py", "run.py"):
        (tmp_path / name).write_text("")
    assert run.discover(tmp_path) == ["a", "b"]
    assert "engine" in run.discover()


def test_table_json_and_compare(fake_benchmarks, tmp_path):
    results = [run.run_inline(n, True, package="fakebench") for n in fake_benchmarks]
    ok = {r["name"]: r["ok"] for r in results}
    assert ok == {"rows": True, "plain": True, "broken": False}
    assert "ZeroDivisionError" in results[2]["error"]

    table = run.render_table(results)
    lines = table.splitlines()
    assert lines[0].startswith("| Benchmark | Metric | esafety | Peer | Peer figure | Ratio |")
    assert all(line.count("|") == lines[0].count("|") for line in lines), table
    assert "| fake | ops/s | 300 | peerd | 150 | 2.00x | ops/s | >= 200 | yes |" in table
    assert "| fake | memory | 130 | - | - | - | MB | <= 120 | **no** |" in table
    # a plain dict: P_K is peer P's figure for K, goal_K its goal
    assert "| plain | packets_per_second | 1,000 | ndpi | 4,000 | 0.25x | /s | >= 500 | yes |" in table
    assert "sqlite.queue_ms.first_page | 12.5" in table
    assert "| broken | **FAILED**: ZeroDivisionError" in table

    payload = run.build_payload(results, quick=True, started=0.0)
    run.write_results(payload, tmp_path)
    first = json.loads((tmp_path / "latest.json").read_text())
    assert first["quick"] is True and not first["modules"]["broken"]["ok"]
    assert {r["metric"] for r in first["rows"]} >= {"ops/s", "memory", "packets_per_second"}
    assert (tmp_path / "latest.md").read_text().startswith("| Benchmark")

    for r in results[0]["rows"]:
        if r["metric"] == "ops/s":
            r["ours"] = 200.0  # a third slower
    run.write_results(run.build_payload(results, quick=True, started=0.0), tmp_path)
    assert json.loads((tmp_path / "previous.json").read_text()) == first
    latest = json.loads((tmp_path / "latest.json").read_text())
    diff, counts = compare.compare(latest, first)
    assert "| fake | ops/s (vs peerd) | 300 | 200 | -33.3% | ops/s | **worse** |" in diff
    assert counts["worse"] == 1 and counts["new"] == 0


def test_isolated_failure_is_reported_not_raised():
    """A module failing in its child interpreter comes back as a failed result with the error."""
    res = run.run_isolated("does_not_exist_xyz", quick=True, timeout=120)
    assert not res["ok"] and "ModuleNotFoundError" in res["error"]
    assert res["rows"] == []
