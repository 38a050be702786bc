"""The performance benchmark (perf/bench.py) in smoke mode: tiny sizes, 1 s runs, one round.

It checks that the benchmark runs and reports what it measured: every metric is produced for both
servers with positive numbers (in the 2-gateway rows, every gateway behind nginx did work), each
has a reference (a baseline measured in the same run, or a target), the ratio is Nebula's median
over that same-run baseline's, and each target's verdict follows from its measured number. The
numbers themselves are never judged (see perf/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.timeout(600)

METRICS = {
    "get_4k_c1": "nginx",
    "get_4k_c8": "nginx",
    "get_4k_c64": "nginx",
    "get_16m_c1": "nginx",
    "get_16m_c8": "nginx",
    "get_256m_c1": "nginx",
    "get_256m_c8": "nginx",
    "range_1m_c8": "nginx",
    "put_4k_c1": "nginx",
    "put_4k_c8": "nginx",
    "put_4k_c8_floor": "fs floor",
    "cluster_get_4k_c8": "1 gateway",
    "cluster_put_4k_c8": "1 gateway",
    "put_4k_c1_postgres": "SQLite catalog",
    "put_16m_c1": "nginx",
    "put_16m_c8": "nginx",
    "multipart_1g": "nginx",
    "list_1k": None,
    "list_100k_first_page": None,
    "transcode_720p": "gst-launch",
    "transcode_720p_ttfb": "gst-launch",
    "transcode_480p": "gst-launch",
    "transcode_480p_ttfb": "gst-launch",
    "hls_seek_first_segment": "gst-launch",
    "hls_segments_720p": "live fMP4",
    "hls_cached_segment_c8": "nginx",
    "webapp_first_paint": "nginx",
    "webapp_play_720p": "nginx",
}
NO_RSS = {"fs floor"}  # floor.c's peak RSS is not measured (see loads.run_floor)
BALANCED = ("cluster_get_4k_c8", "cluster_put_4k_c8")  # through compose/cluster's nginx, "nebula" = 2 gateways


def check_balanced(mid: str, m: dict) -> list[str]:
    """The 2-gateway rows measured 2 gateways against 1, and nginx gave every gateway work."""
    problems = []
    for server, gateways in (("1 gateway", 1), ("nebula", 2)):
        for r in m["servers"][server]["runs"]:
            shares = r.get("gateway_cpu_s") or []
            if r.get("gateways") != gateways or len(shares) != gateways or not all(s > 0 for s in shares):
                problems.append(f"{mid} / {server}: gateways {r.get('gateways')}, CPU per gateway {shares}")
    return problems


def check_reference(mid: str, m: dict) -> list[str]:
    """What a metric is compared with, and the verdicts, as the report must derive them."""
    problems = []
    if not m["baseline"] and not m["targets"]:
        problems.append(f"{mid}: neither a baseline nor a target to compare with")
    nebula = m["servers"]["nebula"]["summary"]
    if m["baseline"]:
        base = m["servers"][m["baseline"]]["summary"]
        if base and nebula and m["ratio"] is not None:
            expected = nebula["median"] / base["median"]
            if abs(m["ratio"] - expected) > 1e-9 * expected:
                problems.append(f"{mid}: ratio {m['ratio']} is not nebula/baseline of this run ({expected})")
    for t in m["targets"]:
        measured = {
            "value_min": nebula and nebula["median"],
            "value_max": nebula and nebula["median"],
            "ratio_min": m["ratio"],
            "ratio_max": m["ratio"],
            "cpu_max": nebula and nebula["cpu_per_unit"],
            "rss_max_mib": nebula and nebula["peak_rss_mib"],
        }.get(t["kind"], "unknown kind")
        if not isinstance(t["limit"], (int, float)) or not t["limit"] > 0:
            problems.append(f"{mid}: target {t} has no positive limit")
        if not isinstance(t["measured"], (int, float)) or t["measured"] != measured:
            problems.append(f"{mid}: target {t['target']} measured {t['measured']}, expected {measured}")
            continue
        verdict = t["measured"] >= t["limit"] if t["kind"].endswith("_min") else t["measured"] <= t["limit"]
        if t["pass"] is not verdict:
            problems.append(f"{mid}: target {t['target']} says pass={t['pass']} for {t['measured']}")
    return problems


def test_benchmark_smoke(tmp_path):
    out = tmp_path / "results.json"
    p = subprocess.run(
        [sys.executable, str(HERE / "perf" / "bench.py"), "--smoke", "--out", str(out), "--workdir", str(tmp_path)],
        capture_output=True, text=True, timeout=540,
    )
    assert p.returncode == 0, f"bench.py failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-5000:]}"
    assert "targets (informational)" in p.stdout, p.stdout[-2000:]

    results = json.loads(out.read_text())
    assert results["meta"]["mode"] == "smoke"
    metrics = results["metrics"]
    assert set(metrics) == set(METRICS), sorted(metrics)

    problems = []
    for mid, baseline in METRICS.items():
        m = metrics[mid]
        assert m["baseline"] == baseline, (mid, m["baseline"])
        for server in ([baseline] if baseline else []) + ["nebula"]:
            summary = m["servers"][server]["summary"]
            errors = [r.get("error") for r in m["servers"][server]["runs"] if r.get("error")]
            if summary is None or errors:
                problems.append(f"{mid} / {server}: no result {errors}")
                continue
            if not summary["median"] > 0 or not summary["cpu_per_unit"] >= 0:
                problems.append(f"{mid} / {server}: median {summary['median']}, cpu {summary['cpu_per_unit']}")
            if server not in NO_RSS and not (summary["peak_rss_mib"] or 0) > 0:
                problems.append(f"{mid} / {server}: peak RSS {summary['peak_rss_mib']}")
        if baseline and not (m["ratio"] or 0) > 0:
            problems.append(f"{mid}: ratio {m['ratio']}")
        problems += check_reference(mid, m)
        if mid in BALANCED:
            problems += check_balanced(mid, m)
    assert not problems, "\n".join(problems) + "\n" + p.stderr[-4000:]
