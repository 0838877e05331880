"""bench/results/latest.{json,md,png}: the figures, the goals, and a plot."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .processes import CONTROL_PLANE

GOALS: dict[str, tuple[str, float, str]] = {
    # key: (comparison, bound, what)
    "api_requests_per_workflow": ("<=", 4.0, "API requests per workflow (jobferry's own)"),
    "create_throughput_ratio": (">=", 0.8, "create throughput / raw kubernetes client"),
    "latency_p95_s": ("<=", 2.0, "p95 completion-to-outcome latency, s"),
    "worker_rss_mb": ("<", 500.0, "peak worker RSS, MB (all worker processes)"),
}

SCHEMA = """\
latest.json: {"runs": [one object per N], plus the largest N's headline keys at top level,
"goals", "definitions", "command"}. Per run: n, create_throughput_ratio, latency_p95_s,
api_requests_per_workflow, baseline_api_requests_per_workflow, worker_rss_mb,
redis_used_memory_peak_mb, then "jobferry" and "baseline" (details: throughput, latency
summaries, request counts by 'VERB resource'), "idle", "config", "machine" (load average).
"""

DEFINITIONS = {
    "api_requests_per_workflow": (
        "requests made by the jobferry worker's ServiceAccount (launch, status checks, log "
        "read; and the watcher when it runs) divided by N, counted in kube-apiserver's audit "
        "log; without an audit log (or when it rotated during the phase), from /metrics' APF "
        "counter of ServiceAccount requests (which leaves out long-running pods/log reads)"
    ),
    "baseline_api_requests_per_workflow": (
        "the same count for the baseline client: 1 create plus a GET every 2 s per Job until "
        "it finished (the seed's WaitForCompletion). The GETs start once the last Job is "
        "created, so each Job misses about half the create window's worth of them (at "
        "N=5,000: 102 per workflow, against 112 in a run that polled from the first create)"
    ),
    "requests.client_per_workflow_apf": (
        "apiserver_flowcontrol_dispatched_requests_total{flow_schema='service-accounts'} delta "
        "/ N: every control-plane component uses the admin certificate (flow schema 'exempt'), "
        "so this is the phase's ServiceAccount client, read from /metrics. APF does not "
        "count long-running requests (watches, pods/log), so it can read lower than the audit"
    ),
    "requests.cluster_per_workflow_request_total": (
        "apiserver_request_total delta over the phase (resource requests of ALL clients: the "
        "Job controller, scheduler, kwok, garbage collector too) minus the idle rate times the "
        "phase length, / N. The controllers' share is the same for both phases"
    ),
    "create_throughput_ratio": (
        "N / (last Job seen created - first submit), jobferry over baseline; both timed by the "
        "same admin watch on Jobs. The baseline only creates in that window (its GETs start "
        "after it). Each side on a fresh control plane warmed by the same Jobs; the median "
        "of the pairs (pairs)"
    ),
    "create_cpu": (
        "CPU seconds (user + system, from /proc via psutil, sampled every 0.25 s) spent from the "
        "first submit (or create call) to the last Job seen created, per Job created: the "
        "whole machine (ms_per_job; busy_cores is it over the window's length) and by process: "
        "jobferry's workers and their children, Redis, the bench process (the producer and the "
        "Job watch for jobferry; the raw client, its poller and the Job watch for the "
        "baseline), each control-plane binary. The machine is shared: what the client spends "
        "the API server cannot"
    ),
    "latency_s": (
        "outcome stored (the record's updated_at when the outcome was written) minus the moment "
        "the benchmark's Job watch saw the Complete condition. latency_vs_completion_time_s uses "
        "status.completionTime instead, which has 1 s resolution (truncated), so it reads up "
        "to 1 s high"
    ),
    "redis_calls_per_workflow": (
        "Redis commands by name (INFO commandstats) from the first submit to the last outcome, "
        "/ N: the producer's, the workers' (Celery's broker and results too) and the watcher's. "
        "A command a Lua script runs counts too; eval and evalsha are the script calls (the "
        "records and the API budget use EVAL, the cache's fenced writes EVALSHA)"
    ),
    "worker_rss_mb": (
        "peak of the summed RSS of every jobferry process (launch and status worker trees, "
        "pool children included, and the watcher), sampled every second. RSS counts the "
        "pages a prefork pool shares copy-on-write once per process; worker_pss_mb (PSS) "
        "counts each shared page once, split between its sharers"
    ),
}


def verdict(key: str, value: float | None) -> str:
    if value is None:
        return "n/a"
    comparison, bound, _ = GOALS[key]
    ok = {"<=": value <= bound, ">=": value >= bound, "<": value < bound}[comparison]
    return "PASS" if ok else "MISS"


def write(results: list[dict[str, Any]], out_dir: Path, command: str) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    largest = max(results, key=lambda r: int(r["n"]))
    headline = {k: largest[k] for k in ("n", *GOALS, "baseline_api_requests_per_workflow")}
    document = {
        **headline,
        "command": command,
        "goals": {k: f"{c} {b}" for k, (c, b, _) in GOALS.items()},
        "definitions": DEFINITIONS,
        "schema": SCHEMA,
        "runs": results,
    }
    (out_dir / "latest.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "latest.md").write_text(markdown(results, command))
    plot(results, out_dir / "latest.png")


def update_readme(readme: Path, results: list[dict[str, Any]], command: str) -> None:
    """Put the results table between the README's bench-results markers."""
    text = readme.read_text()
    start, end = "<!-- bench-results:start -->\n", "<!-- bench-results:end -->"
    if start not in text or end not in text:
        return
    table = markdown(results, command).split("\n", 2)[2]
    head, rest = text.split(start, 1)
    readme.write_text(head + start + table + rest[rest.index(end) :])


def markdown(results: list[dict[str, Any]], command: str) -> str:
    sizes = [r["n"] for r in results]
    header = "| goal | target | " + " | ".join(f"N = {n:,}" for n in sizes) + " |"
    rows = [header, "| --- | --- |" + " --- |" * len(sizes)]
    for key, (comparison, bound, what) in GOALS.items():
        cells = [f"{_fmt(r[key])} {verdict(key, r[key])}" for r in results]
        rows.append(f"| {what} | {comparison} {bound:g} | " + " | ".join(cells) + " |")
    extra: list[tuple[str, Callable[[dict[str, Any]], str]]] = [
        ("baseline: API requests per workflow (GET every 2 s)",
         lambda r: _fmt(r["baseline_api_requests_per_workflow"])),
        ("cluster-wide requests per workflow, jobferry / baseline (apiserver_request_total)",
         lambda r: f"{_fmt(r['jobferry']['requests']['cluster_per_workflow_request_total'])} / "
         f"{_fmt(r['baseline']['requests']['cluster_per_workflow_request_total'])}"),
        ("ServiceAccount requests per workflow from /metrics (APF), jobferry / baseline",
         lambda r: f"{_fmt(r['jobferry']['requests']['client_per_workflow_apf'])} / "
         f"{_fmt(r['baseline']['requests']['client_per_workflow_apf'])}"),
        ("create ratio of each pair, in run order (the median is the goal's row)",
         lambda r: " / ".join(_fmt(p["create_throughput_ratio"]) for p in r.get("pairs", []))
         or "n/a"),
        ("Jobs created per s, jobferry / raw client",
         lambda r: f"{_rate(r['jobferry']['create_throughput_per_s'])} / "
         f"{_rate(r['baseline']['create_throughput_per_s'])}"),
        ("CPU per Job while creating, ms (whole machine), jobferry / raw client",
         lambda r: _cpu(r, "ms_per_job")),
        ("busy cores while creating, jobferry / raw client", lambda r: _cpu(r, "busy_cores")),
        ("of which jobferry's workers (and watcher) / Redis / the bench process, ms per Job",
         _cpu_shares),
        ("completion-to-outcome p50 / p99, s",
         lambda r: f"{_fmt(r['jobferry']['latency_s']['p50'])} / "
         f"{_fmt(r['jobferry']['latency_s']['p99'])}"),
        ("baseline poller: completion-to-seen p50 / p95, s",
         lambda r: f"{_fmt(r['baseline']['latency_s']['p50'])} / "
         f"{_fmt(r['baseline']['latency_s']['p95'])}"),
        ("Job duration, s", lambda r: str(r["config"]["duration_s"])),
        ("Jobs in flight at once (peak)", lambda r: f"{r['jobferry']['in_flight_peak']:,}"),
        ("worker PSS (shared pages counted once), MB", lambda r: _fmt(r.get("worker_pss_mb"))),
        ("Redis used_memory_peak, MB", lambda r: _fmt(r["redis_used_memory_peak_mb"])),
        ("Redis commands per workflow (those Lua scripts run included) / Lua script calls",
         _redis_calls),
        ("outcomes", lambda r: ", ".join(f"{k} {v}" for k, v in r["jobferry"]["outcomes"].items())),
        ("watcher", lambda r: _watcher(r["jobferry"]["watcher"])),
        ("load average before (1 min)", lambda r: _fmt(r["machine"]["load_before"][0])),
    ]  # fmt: skip
    for what, cell in extra:
        rows.append(f"| {what} | | " + " | ".join(cell(r) for r in results) + " |")
    return (
        "# jobferry benchmark: latest results\n\n"
        + "; ".join(f"`{c}`" for c in dict.fromkeys(r.get("command", command) for r in results))
        + "; definitions in latest.json (`definitions`) and the README's "
        "Performance section.\n\n" + "\n".join(rows) + "\n"
    )


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["n"] for r in results]
    figure, axes = plt.subplots(1, 3, figsize=(13, 4))
    ax = axes[0]
    ax.plot(sizes, [r["api_requests_per_workflow"] for r in results], "o-", label="jobferry")
    ax.plot(sizes, [r["baseline_api_requests_per_workflow"] for r in results], "s--",
            label="GET every 2 s")  # fmt: skip
    ax.axhline(4, color="grey", linestyle=":", label="goal <= 4")
    ax.set(title="API requests per workflow (client's own)", xlabel="workflows N", xscale="log")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax = axes[1]
    for key, label in (("p50", "p50"), ("p95", "p95"), ("p99", "p99")):
        ax.plot(sizes, [r["jobferry"]["latency_s"][key] for r in results], "o-", label=label)
    ax.axhline(2, color="grey", linestyle=":", label="goal p95 <= 2 s")
    ax.set(title="completion-to-outcome latency, s", xlabel="workflows N", xscale="log")
    ax.set_ylim(bottom=0)
    ax.legend()
    ax = axes[2]
    positions = range(len(sizes))
    bars = (
        ("worker RSS", [r["worker_rss_mb"] for r in results], -0.27),
        ("worker PSS", [r.get("worker_pss_mb") or 0 for r in results], 0.0),
        ("Redis peak", [r["redis_used_memory_peak_mb"] for r in results], 0.27),
    )
    for label, values, shift in bars:
        ax.bar([p + shift for p in positions], values, width=0.27, label=label)
    ax.axhline(500, color="grey", linestyle=":", label="goal RSS < 500 MB")
    ax.set_xticks(list(positions), [str(n) for n in sizes])
    ax.set(title="peak memory, MB (log scale)", xlabel="workflows N", yscale="log")
    ax.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _cpu(result: dict[str, Any], key: str) -> str:
    """A create-window CPU figure of both phases; runs from before it was measured: n/a."""
    jobferry, baseline = (
        result[phase].get("create_cpu") or {} for phase in ("jobferry", "baseline")
    )
    return f"{_fmt(jobferry.get(key))} / {_fmt(baseline.get(key))}"


def _cpu_shares(result: dict[str, Any]) -> str:
    by_process = (result["jobferry"].get("create_cpu") or {}).get("ms_per_job_by_process")
    if not by_process:
        return "n/a"
    others = {"redis", "bench", *CONTROL_PLANE}
    workers = sum(v for k, v in by_process.items() if k not in others)
    return " / ".join(_fmt(v) for v in (workers, by_process.get("redis"), by_process.get("bench")))


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def _rate(value: float | None) -> str:
    """Jobs per second, whole: 92 / 135, not 92.13 / 135."""
    return "n/a" if value is None else f"{value:,.0f}"


def _redis_calls(result: dict[str, Any]) -> str:
    """Runs before the count existed have none."""
    calls = result["jobferry"].get("redis_calls_per_workflow")
    if not calls:
        return "n/a"
    scripts = calls.get("eval", 0.0) + calls.get("evalsha", 0.0)
    return f"{_fmt(round(sum(calls.values()), 2))} / {_fmt(round(scripts, 2))}"


def _watcher(mode: str | bool) -> str:
    """How the watch ran; runs before `--watcher embedded` existed recorded a bool."""
    names = {"process": "`jobferry watcher` process", "embedded": "in a worker (`--watch`)"}
    if isinstance(mode, bool):
        mode = "process" if mode else "none"
    return names.get(mode, "none")
