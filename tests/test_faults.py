"""Fault injection: three worker processes share a store, and something goes wrong.

Each test serves tests/fault_app.py as three uvicorn workers on one store (SQLite with a
lock file, PostgreSQL, Redis), lets their 1-second jobs run, injects one fault, and judges
from outside, through what a user can see:

- a witness file the jobs write (``start``/``end`` lines with the fire's scheduled time),
- the jobs' run histories and the job list, through the admin API of every live worker,
- the workers' log lines (each worker's stderr).

The faults: the leader stopped with SIGSTOP past its lease and then continued; a leader
killed with SIGKILL just after its election; the store server restarted mid-run (a private
PostgreSQL cluster and a private Redis without persistence, see tests/fault_services.py,
so the shared servers are never touched); a worker running the previous release, which
lacks a job's function, reading the job list beside the others.

Every test checks the same promises: each fire due while the cluster ran either ran once
or is in the job's history as missed or skipped (and a log line says so); a run that
completed is never recorded as ``cancelled``; no job is deleted (every worker still lists
it with a next run time); and fires go on after the fault. The figures are printed per
scenario and store. Waits only bound how long the test is willing to wait for something
that must happen; nothing here judges speed.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from fault_services import PrivatePostgres, PrivateRedis, free_port, private_postgres, private_redis
from helpers import report_workers, wait_for
from mw_services import drop_namespace, postgres_url, redis_url, unique_namespace

HERE = Path(__file__).resolve().parent
LEASE = 1.5  # seconds: short, to keep the suite short; the default is 10
WORKERS = 3
SECOND_US = 1_000_000
PERIOD_US = SECOND_US  # every job of fault_app runs each second
DECLARED = ("tick", "newer")  # declared in the app's code
ADDED = "added"  # added at run time, through a follower
JOBS = (*DECLARED, ADDED)
ON_RECORD = ("missed", "skipped")
FIRES_AFTER_FAULT = 3  # fires of each job that must run after the fault
EXTRA_JOBS = 6  # more jobs where a leader dies just after its election: more fires at stake
AHEAD = 5  # fires (seconds) another job may run ahead before a job counts as stuck
OUTAGE_SECONDS = 3.0  # how long a store stays down
START_TIMEOUT = 90.0
SETTLE_TIMEOUT = 60.0
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _us(iso: str) -> int:
    return (datetime.fromisoformat(iso) - _EPOCH) // timedelta(microseconds=1)


def _call(method: str, url: str, timeout: float = 5.0) -> tuple[int, dict]:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        return exc.code, {"error": exc.read().decode(errors="replace")}


@dataclass
class Worker:
    port: int
    proc: subprocess.Popen
    log: Path
    stopped: bool = False  # SIGSTOPped: it cannot answer

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def get(self, path: str, timeout: float = 5.0) -> dict:
        code, body = _call("GET", self.url + path, timeout)
        assert code == 200, f"GET {path} on worker {self.pid} answered {code}: {body}"
        return body

    def status(self) -> dict | None:
        if self.stopped or self.proc.poll() is not None:
            return None
        try:
            return _call("GET", self.url + "/fault/status", 5.0)[1]
        except OSError:
            return None


@dataclass
class Cluster:
    env: dict[str, str]
    dir: Path
    workers: list[Worker] = field(default_factory=list)
    deaths: dict[int, float] = field(default_factory=dict)  # pid -> killed by then

    @property
    def jobs(self) -> tuple[str, ...]:
        extra = int(self.env.get("FAULT_EXTRA_JOBS", "0"))
        return (*JOBS, *(f"extra-{n}" for n in range(extra)))

    @property
    def witness(self) -> Path:
        return Path(self.env["FAULT_WITNESS"])

    @property
    def arm(self) -> Path:
        return Path(self.env["FAULT_ARM"])

    def start(self, count: int, **env: str) -> list[Worker]:
        new = []
        for n in range(count):
            port = free_port()
            log = self.dir / f"worker-{len(self.workers) + n}.log"
            proc = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "fault_app:app", "--app-dir", str(HERE)]
                + ["--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                env={**self.env, **env},
                stdout=log.open("w"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            new.append(Worker(port, proc, log))
        self.workers += new
        deadline = time.monotonic() + START_TIMEOUT
        while any(w.status() is None for w in new):
            if any(w.proc.poll() is not None for w in new) or time.monotonic() > deadline:
                pytest.fail(f"a worker did not start:\n{self.tails()}", pytrace=False)
            time.sleep(0.1)
        return new

    def alive(self) -> list[Worker]:
        return [w for w in self.workers if w.proc.poll() is None]

    def answering(self) -> list[Worker]:
        return [w for w in self.alive() if not w.stopped]

    def leaders(self) -> list[Worker]:
        return [w for w in self.answering() if (w.status() or {}).get("is_leader")]

    def wait_for_leader(self, other_than: Worker | None = None) -> Worker:
        """The one answering worker that leads (not ``other_than``); fails after a while."""
        found: list[Worker] = []

        def one_leader() -> bool:
            found[:] = [w for w in self.leaders() if w is not other_than]
            return len(found) == 1

        wait_for(one_leader, timeout=LEASE + START_TIMEOUT, what="one leader")
        return found[0]

    def signal(self, worker: Worker, sig: signal.Signals) -> None:
        worker.proc.send_signal(sig)
        worker.stopped = sig == signal.SIGSTOP
        if sig == signal.SIGKILL:
            worker.proc.wait()
            self.deaths[worker.pid] = time.time()

    def stop(self) -> None:
        for worker in self.alive():
            worker.proc.send_signal(signal.SIGCONT)
            worker.proc.send_signal(signal.SIGTERM)
        for worker in self.workers:
            try:
                worker.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                worker.proc.kill()
                worker.proc.wait()

    def logs(self) -> list[str]:
        return [line for w in self.workers for line in w.log.read_text().splitlines()]

    def tails(self) -> str:
        return "\n".join(
            f"--- worker pid {w.pid} (port {w.port}):\n{w.log.read_text()[-3000:]}"
            for w in self.workers
        )


Run = tuple[str, int, int]  # job id, scheduled µs, pid


@dataclass
class Witness:
    """What the jobs wrote: the runs that started, and when each run that ended did."""

    starts: list[Run]
    ends: dict[Run, float]

    @classmethod
    def read(cls, path: Path) -> Witness:
        starts: list[Run] = []
        ends: dict[Run, float] = {}
        text = path.read_text() if path.exists() else ""
        # A line is whole once its newline is written: the last piece is empty, or a line
        # a worker is writing as this reads (a read can see part of a write).
        for line in text.split("\n")[:-1]:
            stage, job_id, scheduled, pid, at = line.split()
            if scheduled == "-":  # a run started by hand, not by a fire
                continue
            run = (job_id, int(scheduled), int(pid))
            if stage == "start":
                starts.append(run)
            else:
                ends[run] = float(at)
        return cls(starts, ends)

    @property
    def started(self) -> Counter[tuple[str, int]]:
        """How many runs each fire (job id, scheduled µs) started."""
        return Counter((j, s) for j, s, _ in self.starts)

    def fires_after(self, job_id: str, after: float) -> int:
        return sum(1 for j, s, _ in self.ends if j == job_id and s > after * SECOND_US)

    def cut_short(self, deaths: dict[int, float]) -> Counter[str]:
        """Runs per job that a killed worker may not have finished reporting: never ended,
        or ended within a second of the worker's death."""
        return Counter(
            run[0]
            for run in self.starts
            if run[2] in deaths and self.ends.get(run, float("inf")) >= deaths[run[2]] - 1.0
        )


@dataclass
class Histories:
    """What the jobs' histories say, as the live workers show them through the admin API."""

    on_record: set[tuple[str, int]] = field(default_factory=set)  # missed or skipped fires
    cancelled: Counter[str] = field(default_factory=Counter)
    listed: dict[int, dict[str, dict]] = field(default_factory=dict)  # pid -> id -> job

    def read(self, cluster: Cluster) -> None:
        for worker in cluster.answering():
            try:
                jobs = worker.get("/scheduler/jobs", timeout=30)
            except (OSError, AssertionError):
                continue
            items = jobs if isinstance(jobs, list) else jobs.get("jobs", jobs.get("items", []))
            self.listed[worker.pid] = {job["id"]: job for job in items}
            for job_id in cluster.jobs:
                try:
                    job = worker.get(f"/scheduler/jobs/{job_id}", timeout=30)
                except (OSError, AssertionError):
                    continue
                cancelled = 0
                for run in job.get("history", []):
                    if run["outcome"] in ON_RECORD and run["scheduled_time"] is not None:
                        self.on_record.add((job_id, _us(run["scheduled_time"])))
                    elif run["outcome"] == "cancelled":
                        cancelled += 1
                self.cancelled[job_id] = max(self.cancelled[job_id], cancelled)


def _wait_unless_stalled(
    done: Callable[[], bool], stalled: Callable[[], bool], poll: float = 0.1
) -> None:
    """Wait for ``done``; stop early once ``stalled`` shows it will not happen (or after a
    generous bound). The caller judges what it finds either way."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while not done() and not stalled() and time.monotonic() < deadline:
        time.sleep(poll)


def _gaps(accounted: list[int], cutoff_us: int) -> list[int]:
    """The fires missing from a job's sorted fire times, a period apart, up to ``cutoff_us``.

    Measured between neighbours rather than on a fixed grid, so a job whose store re-created
    it on a new time base is judged by the fires it missed, not by its new phase.
    """
    missing = []
    for a, b in zip(accounted, [*accounted[1:], cutoff_us + PERIOD_US // 2], strict=True):
        n = round((b - a) / PERIOD_US) - 1
        missing += [a + k * PERIOD_US for k in range(1, n + 1)]
    return [m for m in missing if m <= cutoff_us]


@dataclass
class Verdict:
    scenario: str
    backend: str
    figures: dict = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


def _judge(
    cluster: Cluster,
    scenario: str,
    backend: str,
    fault_end: float,
    excuse: Callable[[str, int], bool] = lambda job_id, us: False,
    lost: set[str] = frozenset(),  # type: ignore[assignment]
) -> Verdict:
    """Wait until fires continue and every due fire is accounted for (bounded), then judge."""
    verdict = Verdict(scenario, backend)
    jobs = [j for j in cluster.jobs if j not in lost]

    def after_fault() -> dict[str, int]:
        witness = Witness.read(cluster.witness)
        return {j: witness.fires_after(j, fault_end) for j in jobs}

    # A job that stays behind while another ran AHEAD more fires is stuck, not slow.
    _wait_unless_stalled(
        lambda: min(after_fault().values()) >= FIRES_AFTER_FAULT,
        lambda: max(after_fault().values()) >= FIRES_AFTER_FAULT + AHEAD,
    )
    stuck = {j: n for j, n in after_fault().items() if n < FIRES_AFTER_FAULT}
    if stuck:
        verdict.problems.append(f"fires did not continue after the fault (fires run): {stuck}")
    cutoff = time.time() - 1.5
    cutoff_us = int(cutoff * SECOND_US)

    histories = Histories()
    gaps: dict[str, list[int]] = {}

    def accounted() -> bool:
        histories.read(cluster)
        nonlocal witness
        witness = Witness.read(cluster.witness)
        gaps.clear()
        for job_id in cluster.jobs:
            fires = {s for j, s in witness.started if j == job_id}
            fires |= {s for j, s in histories.on_record if j == job_id}
            until = cutoff_us
            if job_id in lost:  # stated lost: judge it up to its last fire
                until = max(fires, default=0)
            missing = [s for s in _gaps(sorted(fires), until) if not excuse(job_id, s)]
            if missing:
                gaps[job_id] = missing
        return not gaps

    # Late fires run in order: once some job ran a fire AHEAD seconds past the cutoff, a
    # fire before the cutoff that is neither run nor on record will not be.
    witness = Witness.read(cluster.witness)
    _wait_unless_stalled(
        accounted,
        lambda: max(s for _, s, _ in witness.starts) > (cutoff + AHEAD) * SECOND_US,
        poll=0.5,
    )

    due = [k for k in witness.started if k[1] <= cutoff_us] + [
        k for k in histories.on_record if k not in witness.started
    ]
    duplicates = {k: n for k, n in witness.started.items() if n > 1}
    cut_short = witness.cut_short(cluster.deaths)
    cancelled_but_completed = {
        j: histories.cancelled[j] - cut_short[j]
        for j in cluster.jobs
        if histories.cancelled[j] > cut_short[j]
    }
    deleted = {
        f"{j} on worker {pid}": (job or {}).get("next_run_time", "not listed")
        for pid, listed in histories.listed.items()
        for j in jobs
        if (job := listed.get(j)) is None or job.get("next_run_time") is None
    }
    logs = cluster.logs()
    unlogged = sorted(
        {
            j
            for j, _ in histories.on_record
            if not any(
                re.search(r"\b(WARNING|ERROR)\b", line)
                and j in line
                and re.search(r"miss|skip|not run", line)
                for line in logs
            )
        }
    )
    verdict.figures = {
        "scenario": scenario,
        "backend": backend,
        "fires": len(due) + sum(len(v) for v in gaps.values()),
        "runs": len(witness.starts),
        "duplicates": sum(n - 1 for n in duplicates.values()),
        "gaps": sum(len(v) for v in gaps.values()),
        "on_record_not_run": len([k for k in histories.on_record if k not in witness.started]),
        "cancelled_but_completed": sum(cancelled_but_completed.values()),
        "cut_short": sum(cut_short.values()),
        "deleted_jobs": len(deleted),
    }
    if duplicates:
        verdict.problems.append(f"fires run more than once: {duplicates}")
    if gaps:
        verdict.problems.append(f"fires neither run nor on record: {gaps}")
    if cancelled_but_completed:
        verdict.problems.append(f"completed runs recorded as cancelled: {cancelled_but_completed}")
    if deleted:
        verdict.problems.append(f"jobs deleted or left without a schedule: {deleted}")
    if unlogged:
        verdict.problems.append(f"missed or skipped fires no log line mentions: {unlogged}")
    return verdict


def _conclude(verdict: Verdict, cluster: Cluster, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\nfault figures: {json.dumps(verdict.figures)}")
    assert not verdict.problems, (
        "\n".join(verdict.problems) + f"\n{verdict.figures}\n{cluster.tails()}"
    )


@pytest.fixture(scope="session")
def private_pg() -> Iterator[PrivatePostgres]:
    with private_postgres() as server:
        yield server


@pytest.fixture(scope="session")
def private_rd() -> Iterator[PrivateRedis]:
    with private_redis() as server:
        yield server


@pytest.fixture
def make_cluster(
    tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[[str], Cluster]]:
    """Builds the cluster for a store URL (``sqlite`` for SQLite and a lock file)."""
    made: list[tuple[Cluster, str, str]] = []

    def make(store: str, extra_jobs: int = 0) -> Cluster:
        namespace = unique_namespace()
        coordination = store
        if store == "sqlite":
            store = f"sqlite:///{tmp_path}/jobs.db"
            coordination = f"file://{tmp_path}/scheduler.lock"
        env = dict(
            os.environ,
            PYTHONUNBUFFERED="1",
            FAULT_JOBSTORE=store,
            FAULT_COORDINATION=coordination,
            FAULT_NAMESPACE=namespace,
            FAULT_LEASE=str(LEASE),
            FAULT_WITNESS=str(tmp_path / "witness.txt"),
            FAULT_LEADERS=str(tmp_path / "leaders.txt"),
            FAULT_ARM=str(tmp_path / "arm"),
            FAULT_EXTRA_JOBS=str(extra_jobs),
        )
        cluster = Cluster(env, tmp_path)
        made.append((cluster, store, namespace))
        return cluster

    yield make
    report = getattr(request.node, "report_call", None)
    for cluster, _, _ in made:
        if report is not None and report.failed:  # where each worker was when it failed
            report_workers(cluster.workers)
    for cluster, store, namespace in made:
        cluster.stop()
        if not store.startswith("sqlite"):
            # A private server may be down after a failed restart test.
            with contextlib.suppress(Exception):
                drop_namespace(store, namespace)


def _shared(backend: str) -> str:
    if backend == "postgresql":
        return postgres_url()
    if backend == "redis":
        return redis_url()
    return "sqlite"


def _start(cluster: Cluster, workers: int = WORKERS) -> Worker:
    """The workers, a job added at run time through a follower, and a few fires run."""
    cluster.start(workers)
    leader = cluster.wait_for_leader()
    follower = next(w for w in cluster.answering() if w is not leader)
    code, body = _call("POST", f"{follower.url}/fault/add/{ADDED}")
    assert code == 200, f"adding {ADDED!r} through a follower answered {code}: {body}"
    started = time.time()
    wait_for(
        lambda: all(
            Witness.read(cluster.witness).fires_after(j, started) >= 2 for j in cluster.jobs
        ),
        timeout=SETTLE_TIMEOUT,
        what="every job to run twice before the fault",
    )
    return leader


def _leaders_file(cluster: Cluster) -> list[tuple[str, int, float]]:
    """``(what, pid, time)``: each election (``leader``) and self-kill (``killed``)."""
    path = Path(cluster.env["FAULT_LEADERS"])
    text = path.read_text() if path.exists() else ""
    lines = text.split("\n")[:-1]  # whole lines only, as in Witness.read
    return [(what, int(pid), float(at)) for what, pid, at in map(str.split, lines)]


# --- 1. SIGSTOP the leader past its lease, then SIGCONT ------------------------------------
# Not on SQLite: the kernel keeps a stopped process's file lock, so no lease runs out.


# The woken leader's writes of run state are refused (fencing); the outcomes of its runs
# reach the history through the new leader.
@pytest.mark.parametrize("backend", ["postgresql", "redis"])
def test_leader_stopped_past_its_lease_leaves_every_fire_accounted(backend, make_cluster, capsys):
    cluster = make_cluster(_shared(backend))
    leader = _start(cluster)

    def leader_mid_run() -> bool:  # stop it with runs started and not ended
        witness = Witness.read(cluster.witness)
        return any(run[2] == leader.pid and run not in witness.ends for run in witness.starts)

    wait_for(leader_mid_run, timeout=SETTLE_TIMEOUT, what="a run in progress on the leader")
    cluster.signal(leader, signal.SIGSTOP)
    stopped_at = time.time()
    successor = cluster.wait_for_leader(other_than=leader)
    wait_for(  # the successor runs fires while the old leader sleeps on
        lambda: any(
            pid == successor.pid and s > stopped_at * SECOND_US
            for _, s, pid in Witness.read(cluster.witness).ends
        ),
        timeout=SETTLE_TIMEOUT,
        what="the new leader to run a fire",
    )
    time.sleep(LEASE)  # a full lease more, then wake the old leader
    cluster.signal(leader, signal.SIGCONT)
    continued_at = time.time()
    wait_for(lambda: leader.status() is not None, timeout=30, what="the old leader to answer")
    verdict = _judge(cluster, "sigstop-leader", backend, fault_end=continued_at + LEASE)
    _conclude(verdict, cluster, capsys)


# --- 2. SIGKILL a newly elected leader -----------------------------------------------------


# Every fire the killed leader claimed is in flight in the store: the next leader records
# those it never started as missed (with a WARNING) and the runs it left as cut short.
@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
def test_leader_killed_just_after_its_election_leaves_every_fire_accounted(
    backend, make_cluster, capsys
):
    cluster = make_cluster(_shared(backend), extra_jobs=EXTRA_JOBS)
    first = _start(cluster)
    cluster.arm.touch()  # the next worker elected kills itself as its first run starts
    cluster.signal(first, signal.SIGKILL)

    def second_died() -> bool:
        taken = list(cluster.dir.glob("arm.taken-by-*"))
        if not taken:
            return False
        pid = int(taken[0].name.rsplit("-", 1)[1])
        if any(w.pid == pid and w.proc.poll() is not None for w in cluster.workers):
            cluster.deaths[pid] = time.time()
            return True
        return False

    wait_for(second_died, timeout=LEASE + SETTLE_TIMEOUT, what="the second leader to die")
    third = cluster.wait_for_leader()
    wait_for(  # the worker notes its election a moment after it says it leads
        lambda: any(w == "leader" and p == third.pid for w, p, _ in _leaders_file(cluster)),
        timeout=30,
        what="the third leader's election noted",
    )
    events = _leaders_file(cluster)
    elected = [pid for what, pid, _ in events if what == "leader"]
    assert third.pid in elected and len(set(elected)) == 3, f"elections: {events}"
    (killed_pid, killed_at) = next((p, t) for w, p, t in events if w == "killed")
    elected_at = max(t for w, p, t in events if w == "leader" and p == killed_pid)
    verdict = _judge(cluster, "sigkill-new-leader", backend, fault_end=time.time())
    verdict.figures["killed_after_election_seconds"] = round(killed_at - elected_at, 3)
    _conclude(verdict, cluster, capsys)


# --- 3. The store's server restarts --------------------------------------------------------


OUTAGE_READS = ("/scheduler/jobs/tick", "/scheduler/jobs", "/scheduler/health", "/fault/status")


def _outage_reads(cluster: Cluster, until: float) -> list[str]:
    """Read from every worker, over and over until ``until``: each read must answer 200,
    from what the worker knows, while the store is down."""
    problems: set[str] = set()
    while time.time() < until:
        for worker in cluster.answering():
            for path in OUTAGE_READS:
                try:
                    code, _ = _call("GET", worker.url + path, timeout=OUTAGE_SECONDS)
                except OSError as exc:
                    problems.add(f"GET {path} on worker {worker.pid} in the outage: {exc}")
                    continue
                if code != 200:
                    problems.add(f"GET {path} on worker {worker.pid} in the outage: {code}")
        time.sleep(0.1)
    return sorted(problems)


# Reads are answered from each worker's view while the store is down.
def test_postgresql_restart_leaves_every_fire_accounted(private_pg, make_cluster, capsys):
    cluster = make_cluster(private_pg.url)
    _start(cluster)
    down_at = time.time()
    private_pg.stop()
    try:
        read_problems = _outage_reads(cluster, until=down_at + OUTAGE_SECONDS)
    finally:
        private_pg.start()
    verdict = _judge(cluster, "store-restart", "postgresql", fault_end=time.time())
    verdict.problems += read_problems
    _conclude(verdict, cluster, capsys)


def test_redis_restart_without_persistence_is_detected_and_stated(private_rd, make_cluster, capsys):
    cluster = make_cluster(private_rd.url)
    _start(cluster)
    down_at = time.time()
    private_rd.stop()
    try:
        read_problems = _outage_reads(cluster, until=down_at + OUTAGE_SECONDS)
    finally:
        private_rd.start()
    back_at = time.time()

    # The restarted Redis holds nothing. Once the workers say so at ERROR, the declared jobs
    # are re-created, a runtime-added job whose loss an ERROR line states may be gone, and
    # fires due between the crash and the first run after it are excused.
    def errors() -> list[str]:
        return [line for line in cluster.logs() if re.search(r"\bERROR\b", line)]

    def stated() -> bool:
        return any(re.search(r"(?i)lost|reset|empty", line) for line in errors())

    # Each worker looks at the store's marker with its heartbeat (every lease / 2).
    with contextlib.suppress(AssertionError):
        wait_for(stated, timeout=LEASE * 3, what="a worker to log the store's loss at ERROR")
    reset_stated = stated()
    lost = {ADDED} if any(ADDED in line for line in errors()) else set()

    def excuse(job_id: str, us: int) -> bool:
        return reset_stated and down_at * SECOND_US <= us <= (back_at + LEASE * 4) * SECOND_US

    verdict = _judge(cluster, "store-restart", "redis", back_at, excuse=excuse, lost=lost)
    verdict.problems += read_problems
    if not reset_stated:
        verdict.problems.append("no worker logged at ERROR that the store lost its data")
    _conclude(verdict, cluster, capsys)


# --- 4. A worker on the previous release, which lacks a job's function ---------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "redis"])
def test_worker_on_older_code_keeps_the_newer_job(backend, make_cluster, capsys):
    cluster = make_cluster(_shared(backend))
    _start(cluster, WORKERS - 1)
    (old,) = cluster.start(1, FAULT_OLD_CODE="1")
    assert not (old.status() or {}).get("is_leader"), "the old worker leads; it should stand by"
    listed = old.get("/scheduler/jobs", timeout=30)  # the dashboard's call, on the standby
    read_at = time.time()
    items = listed if isinstance(listed, list) else listed.get("jobs", listed.get("items", []))
    assert "tick" in {job["id"] for job in items}, f"the old worker lists {items}"
    verdict = _judge(cluster, "older-code", backend, fault_end=read_at)
    _conclude(verdict, cluster, capsys)
