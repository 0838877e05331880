"""One benchmark run per size N: jobferry and the baseline, each on a control plane of its own.

Per N, `--pairs` times (sizes above `--pairs-up-to` once), alternating which side goes first;
each phase on a fresh control plane (or the one given), in this order:

1. warm-up: `--warm-up` Jobs created by the admin in a namespace of their own, waited for until
   they succeeded, so that neither side pays for a control plane's first requests.
2. idle: `/metrics` twice, `--idle` seconds apart, with nothing running: the background rate
   of the controllers (leases, node heartbeats), subtracted from the cluster-wide counts.
   Then the side's own client warms up (`--client-warm-up`, see BenchSettings), uncounted.
3. either jobferry: a real redis-server (AOF), the `jobferry worker` processes (and `jobferry
   watcher` when asked for); N workflows submitted through `scheduler.Jobferry`, every Job
   succeeding after `--duration` seconds (KWOK), all in flight together when creation is
   faster than the duration;
   or the baseline: the same N Job manifests (`workers.backends.manifest.build_job`) created
   with the `kubernetes` client by as many threads as jobferry's launch concurrency, then each
   Job read with a GET every 2 s until it finishes, as the seed's `WaitForCompletion` does;
   the GETs start once the last Job is created, so the create throughput is the client's own.

The result of N is that of the pair whose create-throughput ratio is the median; every pair's
ratio is kept (`pairs`). On a shared 2-core machine one pair's ratio moves by about 0.1 from
run to run.
"""

from __future__ import annotations

import heapq
import json
import os
import platform
import shutil
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil

from scheduler import Jobferry, Settings, WorkflowRequest
from scheduler.naming import job_name
from tests.k8senv.behaviours import BEHAVIOUR_LABEL, DURATION_ANNOTATION
from tests.k8senv.cluster import Cluster
from tests.k8senv.controlplane import ControlPlane, ControlPlaneSettings
from tests.services import ROOT

from . import apimetrics, stats
from . import cluster as bench_cluster
from .processes import (
    CONTROL_PLANE,
    BenchError,
    CpuSampler,
    JobferryProcess,
    Redis,
    RssSampler,
    control_plane_binary,
)
from .timeline import JobTimeline


@dataclass(frozen=True)
class BenchSettings:
    """What one `python -m bench` invocation does (built from its command line)."""

    sizes: tuple[int, ...]
    duration_s: int | None = None
    """How long every Job's pod runs (KWOK), seconds; None: `duration_for(n)`."""
    launch_concurrency: int = 8
    """Processes of the launch worker; also the baseline's create threads."""
    status_concurrency: int = 8
    """Processes (prefork) or threads (threads pool) of the status worker."""
    pool: str = "prefork"
    """Celery pool of both workers: `prefork`, or `threads` (one process each)."""
    shared_workers: int = 0
    """0: a launch worker and a status worker. K: K identical workers that each consume
    both queues with `launch_concurrency / K` of the concurrency (the lease picks which one
    holds the watch when it is embedded)."""
    poll_interval_s: float = 2.0
    """The baseline's GET interval per Job (the seed's WaitForCompletion)."""
    poll_threads: int = 16
    """Threads the baseline poller uses for all its GETs."""
    idle_s: float = 15.0
    """Length of the idle window that measures the background request rate."""
    timeout_s: float = 3600.0
    """Give up a phase after this long."""
    split_cpus: bool = False
    """The control plane on CPU 0 and everything else (the bench, jobferry's workers, Redis,
    the raw client) on the other CPUs, as on a cluster whose API server has nodes of its own;
    False: every process may run on every CPU."""
    watcher: str = "auto"
    """auto: run `jobferry watcher` when the CLI has it; on; off; embedded: no watcher
    process, the status worker holds the watch (`jobferry worker --watch`)."""
    kubeconfig: Path | None = None
    """Use this cluster (admin kubeconfig) instead of starting a control plane per phase."""
    audit_log: Path | None = None
    """The audit log of that cluster, for per-client counts."""
    out_dir: Path = ROOT / "bench" / "results"
    keep: bool = False
    """Keep the work directory (component and worker logs)."""
    merge: bool = False
    """Keep the runs of other sizes already in latest.json."""
    worker_env: dict[str, str] = field(default_factory=dict)
    """Extra JOBFERRY_* settings for the worker processes (recorded in the results)."""
    pairs: int = 3
    """Pairs of phases (jobferry, baseline) per size; the median pair is the result."""
    pairs_up_to: int = 5000
    """Sizes above this run one pair. A minute-long create window does not even out this
    machine's noise: one N = 5,000 pair read 0.68 while the control plane itself was 10-23 %
    slower per Job than in the baseline's phase, and the two pairs run after it 0.82 and 1.04."""
    warm_up_jobs: int = 20
    """Jobs created and finished on each fresh control plane before its phase."""
    client_warm_up: int = 8
    """Before the clock starts, this many workflows (jobferry) or Jobs (the raw client) of 1 s
    go through the side's own client in its namespace and finish: the workers' first tasks
    (their context, Redis and API connections, the watch of the namespace), the raw client's
    first connections. A deployed jobferry runs warm; without it N = 100's window of about a
    second measured mostly start-up. Their requests and CPU fall outside every count."""
    submit_batch: int = 100
    """Workflows per `submit_many` call; 1: one `submit` per workflow."""

    def repeats_for(self, n: int) -> int:
        return max(1, self.pairs if n <= self.pairs_up_to else 1)

    def duration_for(self, n: int) -> int:
        """The given duration, else long enough for all N Jobs to be in flight together:
        60 s, or 60 ms per Job when more (300 s at N = 5,000; Jobs are created at 35-110/s
        on the 2-core machine the README's figures come from)."""
        if self.duration_s is not None:
            return self.duration_s
        return max(60, round(n * 0.06))


def watcher_available() -> bool:
    from workers.cli import main

    return "watcher" in main.commands


def run_size(n: int, settings: BenchSettings, log: Any = print) -> dict[str, Any]:
    """Measure size N: `repeats_for(n)` pairs of phases, the result of the median pair."""
    started = time.time()
    load_before = os.getloadavg()
    pairs: list[tuple[Phase, Phase]] = []
    repeats = settings.repeats_for(n)
    for index in range(repeats):
        # Alternated, so that a machine that slows down or speeds up during a run (a shared
        # host) does not favour the side that always goes first.
        order = ("jobferry", "baseline") if index % 2 == 0 else ("baseline", "jobferry")
        log(f"bench N={n}: pair {index + 1} of {repeats}, {order[0]} first")
        phases = {side: fresh_cluster_phase(side, n, settings, log) for side in order}
        phases["jobferry"].extra["first"] = order[0]
        pairs.append((phases["jobferry"], phases["baseline"]))
        log(f"  create ratio of this pair: {pair_ratio(pairs[-1])}")
    jf, base = median_pair(pairs)
    result = summarise(n, settings, jf, base, load_before, time.time() - started)
    result["pairs"] = [pair_summary(pair) for pair in pairs]
    log(f"bench N={n}: {json.dumps(headline(result))}")
    return result


def fresh_cluster_phase(side: str, n: int, settings: BenchSettings, log: Any) -> Phase:
    """One phase on a control plane of its own (or the given cluster), warmed up first."""
    work = Path(tempfile.mkdtemp(prefix=f"jobferry-bench-{n}-{side}-"))
    log(f"  {side}: work dir {work}")
    plane: ControlPlane | None = None
    if settings.kubeconfig is None:
        plane = ControlPlane(ControlPlaneSettings(work_dir=work / "k8s", keep_work_dir=True))
        plane.start()
        cluster: Cluster = plane
        audit_log = plane.audit_log
    else:
        cluster = Cluster(settings.kubeconfig, work / "attach")
        audit_log = settings.audit_log
    everywhere = psutil.Process().cpu_affinity()
    try:
        if settings.split_cpus:
            split_cpus(everywhere, log)
        worker_kc, baseline_kc = bench_cluster.prepare(cluster)
        seconds = bench_cluster.warm_up(cluster, warm_up_jobs(settings.warm_up_jobs))
        log(f"  warm-up: {settings.warm_up_jobs} Jobs created and finished in {seconds:.1f} s")
        idle = measure_idle(cluster, settings.idle_s, log)
        if side == "jobferry":
            phase = jobferry_phase(n, settings, cluster, audit_log, worker_kc, work, log)
        else:
            phase = baseline_phase(n, settings, cluster, audit_log, baseline_kc, log)
        phase.extra["idle"] = idle
        return phase
    finally:
        # The next control plane is started from this process: it inherits this.
        psutil.Process().cpu_affinity(everywhere)
        if plane is not None:
            plane.stop(keep=settings.keep)
        if not settings.keep:
            shutil.rmtree(work, ignore_errors=True)


def warm_up_jobs(count: int) -> list[dict[str, Any]]:
    """Manifests like the measured ones, finishing after 1 s, with names of their own."""
    return manifests(f"warm-up-{uuid.uuid4().hex[:6]}", count, bench_cluster.WARMUP_NAMESPACE, 1)


def pair_ratio(pair: tuple[Phase, Phase]) -> float | None:
    jf, base = pair
    if not jf.create_throughput or not base.create_throughput:
        return None
    return round(jf.create_throughput / base.create_throughput, 3)


def median_pair(pairs: list[tuple[Phase, Phase]]) -> tuple[Phase, Phase]:
    """The pair whose create ratio is the median (the lower one of an even count)."""
    ranked = sorted(pairs, key=lambda pair: pair_ratio(pair) or 0.0)
    return ranked[(len(ranked) - 1) // 2]


def pair_summary(pair: tuple[Phase, Phase]) -> dict[str, Any]:
    jf, base = pair
    return {
        "first": jf.extra["first"],
        "create_throughput_ratio": pair_ratio(pair),
        "jobferry_per_s": _round(jf.create_throughput),
        "baseline_per_s": _round(base.create_throughput),
        "jobferry_cpu_ms_per_job": cpu_section(jf.extra["create_cpu"], jf.n)["ms_per_job"],
        "baseline_cpu_ms_per_job": cpu_section(base.extra["create_cpu"], base.n)["ms_per_job"],
    }


def split_cpus(cpus: list[int], log: Any) -> None:
    """The control plane's processes on the first CPU; this process, and so every process
    and thread it starts from now on (workers, Redis, the raw client's threads), on the rest."""
    if len(cpus) < 2:
        raise BenchError(f"--split-cpus needs 2 CPUs or more; this process may use {cpus}")
    pinned = 0
    for proc in psutil.process_iter(["name"]):
        if control_plane_binary(proc.info["name"]) is not None:
            proc.cpu_affinity(cpus[:1])
            pinned += 1
    if pinned < len(CONTROL_PLANE):
        raise BenchError(
            f"--split-cpus found {pinned} control-plane processes, not {len(CONTROL_PLANE)}"
        )
    psutil.Process().cpu_affinity(cpus[1:])
    log(f"  control plane on CPU {cpus[0]}; the bench and its processes on CPUs {cpus[1:]}")


def measure_idle(cluster: Cluster, seconds: float, log: Any) -> dict[str, float]:
    log(f"  idle window {seconds:.0f} s")
    before = bench_cluster.scrape(cluster)
    began = time.time()
    time.sleep(seconds)
    change = apimetrics.delta(before, bench_cluster.scrape(cluster))
    elapsed = time.time() - began
    return {
        "window_s": round(elapsed, 1),
        "requests_per_s": round(apimetrics.total(change) / elapsed, 3),
        "service_account_requests_per_s": round(change.service_account_requests / elapsed, 3),
    }


@dataclass
class Phase:
    """What one phase measured."""

    n: int
    began: float
    created_last: float | None = None
    ended: float = 0.0
    latencies: list[float] = field(default_factory=list)
    latencies_vs_completion_time: list[float] = field(default_factory=list)
    states: dict[str, int] = field(default_factory=dict)
    requests: apimetrics.Scrape | None = None
    client_requests: apimetrics.AuditCount | None = None
    in_flight_peak: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def create_throughput(self) -> float | None:
        if self.created_last is None or self.created_last <= self.began:
            return None
        return self.n / (self.created_last - self.began)


def id_prefix(n: int) -> str:
    """Workflow ids (and so Job names) of one phase: unique, for a cluster used again."""
    return f"bench-{n}-{uuid.uuid4().hex[:4]}"


def request(prefix: str, index: int, namespace: str, duration_s: int) -> WorkflowRequest:
    return WorkflowRequest(
        workflow_id=f"{prefix}-{index:05d}",
        image="registry.example/bench:1",
        command=["sleep", str(duration_s)],
        namespace=namespace,
        labels={BEHAVIOUR_LABEL: "succeed"},
        annotations={DURATION_ANNOTATION: f"{duration_s}s"},
        memory_limit="64Mi",
    )


def manifests(prefix: str, count: int, namespace: str, duration_s: int) -> list[dict[str, Any]]:
    """The Job manifests jobferry would create for `count` bench requests."""
    from workers.backends.manifest import build_job

    requests = (request(prefix, index, namespace, duration_s) for index in range(count))
    return [build_job(r, job_name(r.workflow_id), "jobferry") for r in requests]


def submit_all(client: Jobferry, requests: list[WorkflowRequest], batch: int) -> list[str]:
    """Submit in `submit_many` calls of `batch` workflows, as an application with many would."""
    if batch <= 1:
        return [client.submit(r).workflow_id for r in requests]
    handles = []
    for start in range(0, len(requests), batch):
        handles += client.submit_many(requests[start : start + batch])
    return [h.workflow_id for h in handles]


def jobferry_phase(
    n: int,
    settings: BenchSettings,
    cluster: Cluster,
    audit_log: Path | None,
    kubeconfig: Path,
    work: Path,
    log: Any,
) -> Phase:
    duration = settings.duration_for(n)
    log(f"  jobferry: {n} workflows of {duration} s")
    redis_server = Redis(work / "redis")
    redis_server.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBFERRY_")}
    env.update(
        JOBFERRY_REDIS_URL=redis_server.url,
        JOBFERRY_BACKEND="kubernetes",
        KUBECONFIG=str(kubeconfig),
    )
    env.update(settings.worker_env)
    processes = worker_processes(settings, env, work / "logs")
    watcher_process = settings.watcher == "on" or (
        settings.watcher == "auto" and watcher_available()
    )
    use_watcher = watcher_process or settings.watcher == "embedded"
    if watcher_process:
        processes.append(
            JobferryProcess("watcher", ["watcher"], env, work / "logs" / "watcher.log")
        )
    timeline = JobTimeline(cluster.rest(), bench_cluster.JOBFERRY_NAMESPACE).start()
    client = Jobferry(Settings(redis_url=redis_server.url))
    cpu = CpuSampler({}, {"bench": os.getpid()})
    try:
        for process in processes:
            process.start()
        workers = [p for p in processes if p.name != "watcher"]
        wait_for_workers(client, workers, len(workers))
        time.sleep(3 if use_watcher else 0.5)
        if settings.client_warm_up:
            seconds = warm_up_jobferry(client, redis_server, settings.client_warm_up, log)
            log(
                f"  client warm-up: {settings.client_warm_up} workflows finished in {seconds:.1f} s"
            )
        pids = {p.name: p.process.pid for p in processes if p.process}
        sampler = RssSampler(pids).start()
        assert redis_server.process is not None
        cpu.roots.update(pids, redis=redis_server.process.pid)
        cpu.start()
        before = bench_cluster.scrape(cluster)
        offset = apimetrics.audit_offset(audit_log) if audit_log else 0
        prefix = id_prefix(n)
        # Built before the clock starts, as the baseline's manifests are: what is timed is
        # the submit, not the application making its requests.
        requests = [
            request(prefix, index, bench_cluster.JOBFERRY_NAMESPACE, duration) for index in range(n)
        ]
        calls_before = redis_server.command_calls()
        phase = Phase(n, began=time.time())
        ids = submit_all(client, requests, settings.submit_batch)
        phase.extra["submit_s"] = round(time.time() - phase.began, 2)
        wait_until(
            "every workflow has its outcome",
            lambda: redis_server.client().zcard("jobferry:inflight") == 0,
            settings.timeout_s,
            lambda: (
                f"{timeline.created_count()} Jobs created, {timeline.finished_count()} "
                f"finished, {redis_server.client().zcard('jobferry:inflight')} workflows open"
            ),
            log,
        )
        phase.ended = time.time()
        calls = redis_server.command_calls()
        # The last status checks may still be in the API server's counters' flight: settle.
        time.sleep(2)
        phase.requests = apimetrics.delta(before, bench_cluster.scrape(cluster))
        if audit_log:
            phase.client_requests = apimetrics.read_audit(
                audit_log, offset, bench_cluster.user_of(bench_cluster.WORKER_ACCOUNT)
            )
        sampler.stop()
        for workflow_id in ids:
            record = client.status(workflow_id)
            state = record.outcome.state.value if record.outcome else "none"
            phase.states[state] = phase.states.get(state, 0) + 1
            times = timeline.jobs.get(job_name(workflow_id))
            if times is None or times.finished is None:
                continue
            stored = record.updated_at.timestamp()
            phase.latencies.append(stored - times.finished)
            if times.completion_time is not None:
                phase.latencies_vs_completion_time.append(stored - times.completion_time)
        created = [t.created for t in timeline.jobs.values() if t.created is not None]
        phase.created_last = max(created) if created else None
        phase.in_flight_peak = timeline.in_flight_peak()
        cpu.stop()
        phase.extra.update(
            create_cpu=cpu.window(phase.began, phase.created_last or phase.ended),
            worker_rss_mb=round(sampler.peak_total_mb, 1),
            worker_pss_mb=round(sampler.peak_total_pss_mb, 1),
            worker_rss_by_process_mb={
                k: round(v, 1) for k, v in sampler.peak_by_process_mb.items()
            },
            worker_rss_by_tree_mb={k: round(v, 1) for k, v in sampler.peak_by_tree_mb.items()},
            redis=redis_server.memory(),
            redis_calls_per_workflow=calls_per_workflow(calls_before, calls, n),
            watcher="process" if watcher_process else "embedded" if use_watcher else "none",
            jobs_seen=sum(1 for workflow_id in ids if job_name(workflow_id) in timeline.jobs),
            watch_errors=timeline.errors[:5],
        )
        return phase
    finally:
        cpu.stop()
        timeline.stop()
        client.close()
        for process in processes:
            process.stop()
        redis_server.stop()


def warm_up_jobferry(client: Jobferry, redis_server: Redis, count: int, log: Any) -> float:
    """Run `count` workflows of 1 s through the workers until each has succeeded."""
    began = time.monotonic()
    prefix = f"warm-up-{uuid.uuid4().hex[:6]}"
    requests = [request(prefix, i, bench_cluster.JOBFERRY_NAMESPACE, 1) for i in range(count)]
    ids = submit_all(client, requests, count)
    wait_until(
        "the client warm-up's workflows have finished",
        lambda: redis_server.client().zcard("jobferry:inflight") == 0,
        120,
        lambda: f"{redis_server.client().zcard('jobferry:inflight')} warm-up workflows open",
        log,
    )
    for workflow_id in ids:
        outcome = client.outcome(workflow_id)
        if outcome is None or outcome.state.value != "succeeded":
            raise BenchError(f"client warm-up: workflow {workflow_id} ended as {outcome}")
    return time.monotonic() - began


def warm_up_client(
    batch: Any, timeline: JobTimeline, namespace: str, count: int, threads: int, log: Any
) -> float:
    """Create `count` Jobs of 1 s with the raw client's threads; wait until each finished."""
    began = time.monotonic()
    bodies = manifests(f"warm-up-{uuid.uuid4().hex[:6]}", count, namespace, 1)
    with ThreadPoolExecutor(threads) as pool:
        list(
            pool.map(
                lambda body: batch.create_namespaced_job(namespace, body, _preload_content=False),
                bodies,
            )
        )
    names = [body["metadata"]["name"] for body in bodies]

    def finished() -> bool:
        times = [timeline.jobs.get(name) for name in names]
        return all(t is not None and t.finished is not None for t in times)

    wait_until("the client warm-up's Jobs have finished", finished, 120, lambda: "", log)
    return time.monotonic() - began


def calls_per_workflow(before: dict[str, int], after: dict[str, int], n: int) -> dict[str, float]:
    """Redis calls per workflow by command over a phase, most called first."""
    delta = {name: count - before.get(name, 0) for name, count in after.items()}
    ranked = sorted(((c, name) for name, c in delta.items() if c > 0), reverse=True)
    return {name: round(count / n, 2) for count, name in ranked}


def worker_processes(
    settings: BenchSettings, env: dict[str, str], logs: Path
) -> list[JobferryProcess]:
    """The `jobferry worker` processes of a run: split by queue, or shared (see BenchSettings)."""
    quiet = ["--without-heartbeat", "--without-mingle", "--without-gossip", "-l", "WARNING"]
    watch = ["--watch"] if settings.watcher == "embedded" else []
    pool = ["-P", settings.pool]
    if settings.shared_workers:
        concurrency = max(1, settings.launch_concurrency // settings.shared_workers)
        queues = "jobferry.launch,jobferry.status"
        return [
            JobferryProcess(
                f"worker-{i}",
                ["worker", "-Q", queues, "-c", str(concurrency), *pool, *quiet, *watch],
                env,
                logs / f"worker-{i}.log",
            )
            for i in range(1, settings.shared_workers + 1)
        ]
    launch = ["-Q", "jobferry.launch", "-c", str(settings.launch_concurrency)]
    status = ["-Q", "jobferry.status", "-c", str(settings.status_concurrency)]
    return [
        JobferryProcess(
            "launch-worker", ["worker", *launch, *pool, *quiet], env, logs / "launch-worker.log"
        ),
        JobferryProcess(
            "status-worker",
            ["worker", *status, *pool, *quiet, *watch],
            env,
            logs / "status-worker.log",
        ),
    ]


def baseline_phase(
    n: int,
    settings: BenchSettings,
    cluster: Cluster,
    audit_log: Path | None,
    kubeconfig: Path,
    log: Any,
) -> Phase:
    """Create the same Jobs with the kubernetes client, then GET each every 2 s until done
    (the GETs start once the last Job is created)."""
    import kubernetes.config

    log(
        f"  baseline: {n} Jobs created with the kubernetes client, each polled every "
        f"{settings.poll_interval_s} s"
    )
    api = kubernetes.config.new_client_from_config(config_file=str(kubeconfig))
    api.configuration.connection_pool_maxsize = settings.launch_concurrency + settings.poll_threads
    api.rest_client.pool_manager.connection_pool_kw["maxsize"] = (
        settings.launch_concurrency + settings.poll_threads
    )
    batch = kubernetes.client.BatchV1Api(api)
    namespace = bench_cluster.BASELINE_NAMESPACE
    bodies = manifests(id_prefix(n), n, namespace, settings.duration_for(n))
    timeline = JobTimeline(cluster.rest(), namespace).start()
    poller = Poller(batch, namespace, settings.poll_interval_s)
    threads = [
        threading.Thread(target=poller.work, daemon=True) for _ in range(settings.poll_threads)
    ]
    if settings.client_warm_up:
        seconds = warm_up_client(
            batch, timeline, namespace, settings.client_warm_up, settings.launch_concurrency, log
        )
        log(f"  client warm-up: {settings.client_warm_up} Jobs finished in {seconds:.1f} s")
    cpu = CpuSampler({}, {"bench": os.getpid()}).start()
    before = bench_cluster.scrape(cluster)
    offset = apimetrics.audit_offset(audit_log) if audit_log else 0
    phase = Phase(n, began=time.time())

    def create(body: dict[str, Any]) -> None:
        for attempt in range(8):
            try:
                batch.create_namespaced_job(namespace, body, _preload_content=False)
                break
            # 429/5xx under load: back off as any client would; counted like jobferry's.
            except kubernetes.client.ApiException as exc:
                if exc.status not in (429, 500, 503, 504) or attempt == 7:
                    raise
                time.sleep(0.5 * 2**attempt)
        poller.add(body["metadata"]["name"])

    try:
        with ThreadPoolExecutor(settings.launch_concurrency) as pool:
            list(pool.map(create, bodies))
        phase.extra["create_calls_s"] = round(time.time() - phase.began, 2)
        # Polling starts once every Job is created: the create throughput is the raw client's
        # alone, not shared with its own GETs (at N=5,000, ~18 GETs per Job in the window).
        # A Job's GETs are due 2 s apart from its creation; those that fell due meanwhile go
        # out at once, and each Job misses about half the create window's worth of GETs.
        for thread in threads:
            thread.start()
        wait_until(
            "the poller saw every Job finish",
            lambda: poller.done_count() == n,
            settings.timeout_s,
            lambda: (
                f"{timeline.created_count()} created, {timeline.finished_count()} finished, "
                f"poller saw {poller.done_count()}"
            ),
            log,
        )
        phase.ended = time.time()
        poller.stop()
        time.sleep(2)
        phase.requests = apimetrics.delta(before, bench_cluster.scrape(cluster))
        if audit_log:
            phase.client_requests = apimetrics.read_audit(
                audit_log, offset, bench_cluster.user_of(bench_cluster.BASELINE_ACCOUNT)
            )
        for name, seen in poller.done.items():
            times = timeline.jobs.get(name)
            state = "succeeded" if seen[1] else "failed"
            phase.states[state] = phase.states.get(state, 0) + 1
            if times is not None and times.finished is not None:
                phase.latencies.append(seen[0] - times.finished)
                if times.completion_time is not None:
                    phase.latencies_vs_completion_time.append(seen[0] - times.completion_time)
        created = [t.created for t in timeline.jobs.values() if t.created is not None]
        phase.created_last = max(created) if created else None
        phase.in_flight_peak = timeline.in_flight_peak()
        phase.extra.update(
            polls=poller.polls,
            watch_errors=timeline.errors[:5],
            create_cpu=cpu.window(phase.began, phase.created_last or phase.ended),
        )
        return phase
    finally:
        cpu.stop()
        poller.stop()
        timeline.stop()
        api.close()


class Poller:
    """GET each Job every `interval` seconds until it finishes, with a few shared threads."""

    def __init__(self, batch: Any, namespace: str, interval: float) -> None:
        self.batch = batch
        self.namespace = namespace
        self.interval = interval
        self.done: dict[str, tuple[float, bool]] = {}
        self.polls = 0
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Condition()
        self._stopped = False

    def add(self, name: str) -> None:
        with self._lock:
            heapq.heappush(self._heap, (time.monotonic() + self.interval, name))
            self._lock.notify()

    def done_count(self) -> int:
        with self._lock:
            return len(self.done)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._lock.notify_all()

    def work(self) -> None:
        while True:
            with self._lock:
                while not self._stopped and (not self._heap or self._heap[0][0] > time.monotonic()):
                    timeout = self._heap[0][0] - time.monotonic() if self._heap else None
                    self._lock.wait(timeout)
                if self._stopped:
                    return
                due, name = heapq.heappop(self._heap)
            finished = self._get(name)
            with self._lock:
                self.polls += 1
                if finished is None:
                    # Every 2 s from the last due time, or at once when the poller lags.
                    heapq.heappush(self._heap, (max(due + self.interval, time.monotonic()), name))
                    self._lock.notify()
                else:
                    self.done[name] = (time.time(), finished)

    def _get(self, name: str) -> bool | None:
        import kubernetes.client

        try:
            response = self.batch.read_namespaced_job(name, self.namespace, _preload_content=False)
        # A 5xx under load: the seed's loop just polls again.
        except kubernetes.client.ApiException:
            return None
        job = json.loads(response.data)
        for condition in (job.get("status") or {}).get("conditions") or []:
            if condition.get("status") == "True" and condition.get("type") in (
                "Complete",
                "Failed",
            ):
                return bool(condition["type"] == "Complete")
        return None


def wait_for_workers(client: Jobferry, processes: list[JobferryProcess], count: int) -> None:
    """Until `count` workers answer a broadcast ping (their logs stay at WARNING)."""
    deadline = time.monotonic() + 120
    while len(client.celery.control.ping(timeout=1.0) or []) < count:
        for process in processes:
            if process.process is not None and process.process.poll() is not None:
                raise BenchError(f"{process.name} exited; its log:\n{process.log()[-3000:]}")
        if time.monotonic() > deadline:
            logs = "\n".join(p.log()[-2000:] for p in processes)
            raise BenchError(f"workers did not answer a ping within 120 s:\n{logs}")


def wait_until(what: str, probe: Any, timeout: float, progress: Any, log: Any) -> None:
    deadline = time.monotonic() + timeout
    last_report = time.monotonic()
    while not probe():
        if time.monotonic() > deadline:
            raise BenchError(f"timed out after {timeout:.0f} s waiting until {what}: {progress()}")
        if time.monotonic() - last_report > 15:
            log(f"    {progress()}")
            last_report = time.monotonic()
        time.sleep(1)


def requests_section(phase: Phase, idle: dict[str, float]) -> dict[str, Any]:
    assert phase.requests is not None
    seconds = phase.ended - phase.began + 2
    cluster_total = apimetrics.total(phase.requests) - idle["requests_per_s"] * seconds
    section: dict[str, Any] = {
        "window_s": round(seconds, 1),
        "client_per_workflow_audit": None,
        "client_per_workflow_apf": round(phase.requests.service_account_requests / phase.n, 3),
        "cluster_per_workflow_request_total": round(cluster_total / phase.n, 3),
        "cluster_by_request": {k: int(v) for k, v in phase.requests.requests.items()},
    }
    if phase.client_requests is not None:
        section["client_per_workflow_audit"] = round(phase.client_requests.total / phase.n, 3)
        section["client_by_request"] = dict(phase.client_requests.by_request)
    return section


def client_per_workflow(section: dict[str, Any]) -> float:
    audit = section["client_per_workflow_audit"]
    return float(audit if audit is not None else section["client_per_workflow_apf"])


def summarise(
    n: int,
    settings: BenchSettings,
    jf: Phase,
    base: Phase,
    load_before: tuple[float, float, float],
    seconds: float,
) -> dict[str, Any]:
    jf_requests = requests_section(jf, jf.extra["idle"])
    base_requests = requests_section(base, base.extra["idle"])
    ratio = pair_ratio((jf, base))
    latency = stats.summary(jf.latencies)
    return {
        "n": n,
        "create_throughput_ratio": ratio,
        "latency_p95_s": latency["p95"],
        "api_requests_per_workflow": client_per_workflow(jf_requests),
        "baseline_api_requests_per_workflow": client_per_workflow(base_requests),
        "worker_rss_mb": jf.extra["worker_rss_mb"],
        "worker_pss_mb": jf.extra["worker_pss_mb"],
        "redis_used_memory_peak_mb": jf.extra["redis"]["used_memory_peak_mb"],
        "jobferry": {
            "create_throughput_per_s": _round(jf.create_throughput),
            "submit_s": jf.extra["submit_s"],
            "phase_s": round(jf.ended - jf.began, 1),
            "outcomes": jf.states,
            "in_flight_peak": jf.in_flight_peak,
            "latency_s": latency,
            "latency_vs_completion_time_s": stats.summary(jf.latencies_vs_completion_time),
            "requests": jf_requests,
            "create_cpu": cpu_section(jf.extra["create_cpu"], n),
            "worker_rss_by_tree_mb": jf.extra["worker_rss_by_tree_mb"],
            "worker_rss_by_process_mb": jf.extra["worker_rss_by_process_mb"],
            "redis": jf.extra["redis"],
            "redis_calls_per_workflow": jf.extra["redis_calls_per_workflow"],
            "watcher": jf.extra["watcher"],
            "watch_errors": jf.extra["watch_errors"],
        },
        "baseline": {
            "create_throughput_per_s": _round(base.create_throughput),
            "create_calls_s": base.extra["create_calls_s"],
            "phase_s": round(base.ended - base.began, 1),
            "outcomes": base.states,
            "in_flight_peak": base.in_flight_peak,
            "polls": base.extra["polls"],
            "latency_s": stats.summary(base.latencies),
            "requests": base_requests,
            "create_cpu": cpu_section(base.extra["create_cpu"], n),
            "watch_errors": base.extra["watch_errors"],
        },
        "idle": {"jobferry": jf.extra["idle"], "baseline": base.extra["idle"]},
        "config": {
            "duration_s": settings.duration_for(n),
            "launch_concurrency": settings.launch_concurrency,
            "status_concurrency": settings.status_concurrency,
            "pool": settings.pool,
            "shared_workers": settings.shared_workers,
            "poll_interval_s": settings.poll_interval_s,
            "poll_threads": settings.poll_threads,
            "worker_env": settings.worker_env,
            "split_cpus": settings.split_cpus,
            "warm_up_jobs": settings.warm_up_jobs,
            "client_warm_up": settings.client_warm_up,
            "submit_batch": settings.submit_batch,
            "pairs": settings.repeats_for(n),
        },
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": [round(x, 2) for x in load_before],
            "load_after": [round(x, 2) for x in os.getloadavg()],
            "python": platform.python_version(),
        },
        "run_s": round(seconds, 1),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def cpu_section(window: dict[str, float], n: int) -> dict[str, Any]:
    """CPU spent while the Jobs were being created, per Job created, by process."""
    seconds = window.get("window_s") or 0.0
    spent = {k: v for k, v in window.items() if k != "window_s"}
    busy = spent.pop("machine (busy)", 0.0)
    return {
        "window_s": round(seconds, 2),
        "busy_cores": round(busy / seconds, 2) if seconds else None,
        "ms_per_job": round(1000 * busy / n, 2),
        "ms_per_job_by_process": {
            k: round(1000 * v / n, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1])
        },
    }


def headline(result: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "n",
        "create_throughput_ratio",
        "latency_p95_s",
        "api_requests_per_workflow",
        "baseline_api_requests_per_workflow",
        "worker_rss_mb",
    )
    return {k: result[k] for k in keys}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)
