"""Metrics, their targets, the summary of the runs, the printed table and the JSON."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

NEBULA = "nebula"


@dataclass(frozen=True)
class Target:
    """One informational target. kind: value_min / value_max (Nebula's median), ratio_min /
    ratio_max (Nebula / baseline), cpu_max (Nebula's CPU per unit), rss_max_mib (Nebula's peak)."""

    kind: str
    limit: float

    def describe(self, m: "Metric") -> str:
        op = "≥" if self.kind.endswith("_min") else "≤"
        if self.kind.startswith("value"):
            return f"{op}{self.limit:g} {m.unit}"
        if self.kind.startswith("ratio"):
            return f"{op}{self.limit:g}× {m.baseline}"
        if self.kind == "cpu_max":
            return f"{op}{self.limit:g} {m.cpu_unit}"
        return f"{op}{self.limit:g} MiB RSS"

    def measured(self, m: "Metric") -> float | None:
        s = m.summary(NEBULA)
        if s is None:
            return None
        return {
            "value_min": s["median"],
            "value_max": s["median"],
            "ratio_min": m.ratio(),
            "ratio_max": m.ratio(),
            "cpu_max": s["cpu_per_unit"],
            "rss_max_mib": s["peak_rss_mib"],
        }[self.kind]

    def passed(self, m: "Metric") -> bool | None:
        v = self.measured(m)
        if v is None:
            return None
        return v >= self.limit if self.kind.endswith("_min") else v <= self.limit


@dataclass
class Metric:
    id: str
    label: str
    unit: str
    cpu_unit: str
    higher_is_better: bool
    baseline: str | None  # "nginx", "gst-launch" or None (Nebula against its targets only)
    targets: list[Target] = field(default_factory=list)
    params: dict = field(default_factory=dict)
    runs: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def servers(self) -> list[str]:
        return ([self.baseline] if self.baseline else []) + [NEBULA]

    def add_run(self, server: str, run: dict) -> None:
        self.runs.setdefault(server, []).append(run)

    def summary(self, server: str) -> dict | None:
        ok = [r for r in self.runs.get(server, []) if r.get("error") is None]
        if not ok:
            return None
        values = [r["value"] for r in ok]
        median = statistics.median(values)
        rss = [r["peak_rss_kib"] for r in ok if r.get("peak_rss_kib")]
        return {
            "median": median,
            "min": min(values),
            "max": max(values),
            "spread": (max(values) - min(values)) / median if median else 0.0,
            "cpu_per_unit": statistics.median(r["cpu_per_unit"] for r in ok),
            "peak_rss_mib": max(rss) / 1024 if rss else None,
            "others_cores_max": max(r.get("others_cores", 0.0) for r in ok),
            "runs_ok": len(ok),
            "runs_failed": len(self.runs.get(server, [])) - len(ok),
        }

    def ratio(self) -> float | None:
        """Nebula / baseline of the metric's own value."""
        if not self.baseline:
            return None
        a, b = self.summary(NEBULA), self.summary(self.baseline)
        if not a or not b or not b["median"]:
            return None
        return a["median"] / b["median"]

    def to_json(self) -> dict:
        return {
            "label": self.label,
            "unit": self.unit,
            "cpu_unit": self.cpu_unit,
            "higher_is_better": self.higher_is_better,
            "baseline": self.baseline,
            "params": self.params,
            "servers": {
                s: {"summary": self.summary(s), "runs": self.runs.get(s, [])} for s in self.servers
            },
            "ratio": self.ratio(),
            "targets": [
                {"target": t.describe(self), "kind": t.kind, "limit": t.limit,
                 "measured": t.measured(self), "pass": t.passed(self)}
                for t in self.targets
            ],
            "notes": self.notes,
        }


def fmt(v: float | None) -> str:
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def cell(s: dict | None, spread: bool) -> str:
    if s is None:
        return "FAILED"
    text = fmt(s["median"])
    if spread and s["runs_ok"] > 1:
        text += f" ±{s['spread'] * 50:.0f}%"
    if s["runs_failed"]:
        text += f" ({s['runs_failed']} failed)"
    return text


def rss_cell(s: dict | None) -> str:
    return fmt(s["peak_rss_mib"]) if s and s["peak_rss_mib"] else "-"


VERDICT = {True: "PASS", False: "MISS", None: "n/a"}


def table(metrics: list[Metric]) -> str:
    head = ["metric", "unit", "vs", "baseline", "nebula", "ratio", "CPU base", "CPU nebula", "CPU unit",
            "RSS base", "RSS neb", "busy", "targets (informational)"]
    rows = [head]
    for m in metrics:
        b = m.summary(m.baseline) if m.baseline else None
        n = m.summary(NEBULA)
        ratio = m.ratio()
        busy = max([s["others_cores_max"] for s in (b, n) if s] or [0.0])
        targets = "; ".join(f"{VERDICT[t.passed(m)]} {t.describe(m)}" for t in m.targets)
        rows.append([
            m.label, m.unit, m.baseline or "-",
            cell(b, True) if m.baseline else "-", cell(n, True),
            f"{ratio:.2f}×" if ratio is not None else "-",
            fmt(b["cpu_per_unit"]) if b else "-", fmt(n["cpu_per_unit"]) if n else "-", m.cpu_unit,
            rss_cell(b), rss_cell(n), f"{busy:.2f}", targets,
        ])
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) if j in (0, 1, 2, 8, 12) else c.rjust(w) for j, (c, w) in enumerate(zip(r, widths))).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


LEGEND = """\
Medians over the rounds; ±x% = half the min-max spread of the rounds. ratio = Nebula / baseline of
the metric's own value (for wall times and TTFB lower is better). CPU = server CPU (utime+stime
from /proc; nginx = master + workers; gst-launch = the child) per unit. RSS = peak RSS in MiB
(gateway VmHWM; nginx workers summed; gst-launch maxrss). busy = most cores other processes used
during a run of that metric (> 0.3 means the numbers are noisy). fs floor = floor.c: the
filesystem steps of a durable small PUT (create, write, fsync, rename, fsync folder) with no
server; its CPU is the program's own."""
