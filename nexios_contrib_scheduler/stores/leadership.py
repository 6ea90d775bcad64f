"""Leadership: which worker fires the jobs.

With coordination, the worker holding the lease (``coordination.py``) leads; without it
the single process does. A maintenance thread renews or tries the lease, writes this
worker's heartbeat (and reads the others'), warns about workers sharing the store unsafely,
checks the store's epoch marker (a changed or missing one: the store lost its data) and
measures this worker's clock against the store server's, asks for the slow fallback reload, and, while leading, prunes old rows. What it learns
it hands to the event loop through the coordinator (``persistence.py``).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import SchedulerError
from .coordination import Lease, open_lease
from .state import Message
from .urls import StoreURL

if TYPE_CHECKING:
    from .persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")

# Read at each turn of the maintenance thread (tests shorten them).
RESYNC_SECONDS = 10.0  # a coordinated worker's slow fallback: reload everything this often
PRUNE_SECONDS = 600.0  # the leader drops old claims, removals and heartbeats this often

# A worker whose clock is further than this from the store server's logs a warning and
# /health says degraded: leases, heartbeats and fire times are compared across workers.
CLOCK_SKEW_WARN_SECONDS = 1.0


def measure_skew(local: Callable[[], float], server: Callable[[], float | None]) -> float | None:
    """How far the local clock is ahead of the server's (negative: behind), in seconds.

    The server's reading is compared with the midpoint of the local readings taken just
    before and after asking it, which cancels the round trip when it is symmetric. None when
    the server has no clock of its own (``server`` returns None).
    """
    before = local()
    remote = server()
    after = local()
    if remote is None:
        return None
    return (before + after) / 2 - remote


# The workers started in this process and not yet closed (several schedulers may share one).
_RUNNING_HERE: set[str] = set()


def running_here(worker_id: str, running: bool) -> None:
    """Note that a worker of this process started (True) or closed (False)."""
    if running:
        _RUNNING_HERE.add(worker_id)
    else:
        _RUNNING_HERE.discard(worker_id)


def new_epoch() -> str:
    return uuid.uuid4().hex


class Leadership:
    """The lease, the heartbeats, and the thread that keeps them."""

    def __init__(self, owner: Persistence, coordination_url: StoreURL | None) -> None:
        self.owner = owner
        self.coordination_url = coordination_url
        self.lease_seconds = owner.lease_seconds
        self.beat_every = min(5.0, self.lease_seconds / 2)
        self.live_for = 3 * self.beat_every + 1  # a heartbeat older than this is stale
        self.lease: Lease | None = None
        self.holding = False  # the maintenance thread's view of the lease
        self.try_now = False
        self.workers: list[Message] = []
        self.leader: str | None = None
        self._warned: set[str] = set()
        # The store's epoch marker as this worker last saw it, and the job ids it held then.
        self.epoch: str | None = None
        self.known_ids: set[str] = set()
        self.epoch_checks = 0  # maintenance turns that looked at the store (tests wait on it)
        self.local_clock: Callable[[], float] = time.time  # tests replace it
        self.clock_skew: float | None = None
        self._skew_warned = False
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.sync_wanted = threading.Event()  # wakes the coordinator's sync thread

    @property
    def coordinated(self) -> bool:
        return self.lease is not None

    # ------------------------------------------------------------ the lease

    def open_lease(self, engine: Any) -> None:
        """A new lease for this start (``engine``: the job store's, when shared)."""
        owner, url = self.owner, self.coordination_url
        if url is None:
            return
        same = url.url == owner.jobstore_url.url
        self.lease = open_lease(
            url, owner.worker_id, self.lease_seconds, owner.namespace, engine if same else None
        )

    def open(self) -> None:
        if self.lease is None:
            return
        try:
            self.lease.open()
        except Exception as exc:
            raise SchedulerError(
                f"cannot use the coordination backend {self.coordination_url}: "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    def try_take(self) -> bool:
        """Try the lease once and, taken, raise the store's fence to its token; a lease whose
        fence cannot be raised is given back (True without coordination). A failure is
        retried later."""
        if self.lease is None:
            return True
        if not self.owner.attempt("take the scheduler lease", self.lease.try_acquire):
            return False
        if self.raise_fence():
            return True
        self.owner.attempt("give the scheduler lease back", self.lease.release)
        return False

    @property
    def token(self) -> int | None:
        """The fencing token of the lease held (None without coordination)."""
        lease = self.lease
        return None if lease is None else getattr(lease, "token", None)

    def raise_fence(self) -> bool:
        """Just after taking the lease: set the store's fence to its token, so that the
        leader before (paused past its lease, say) can write no more run state. False if the
        fence could not be raised (the store is down; the lease is tried again later)."""
        token = self.token
        if token is None:
            return True
        return self.owner.attempt("raise the job store's fence", self._raise, token) is not None

    def _raise(self, token: int) -> bool:
        # Not waiting long for the fence's row: the lease was taken just now and must be
        # renewed within a third of its time.
        self.owner.state.raise_fence(token, lock_wait=self.lease_seconds / 4)
        return True

    def take_now(self) -> None:
        """The leader let go: try the lease at once."""
        self.try_now = True
        self.wake.set()

    def halt(self) -> None:
        self.stopped.set()
        self.wake.set()
        self.sync_wanted.set()

    def release(self) -> bool:
        """Give the lease back if held; True if it was."""
        if self.lease is None or not self.holding:
            return False
        self.holding = False
        self.lease.release()
        return True

    def close(self) -> None:
        if self.lease is not None:
            self.lease.close()
            self.lease = None

    # ------------------------------------------------------------ the maintenance thread

    def maintain(self) -> None:
        owner, lease = self.owner, self.lease
        seconds = self.lease_seconds
        renew_every = seconds / 3
        try_every = min(1.0, seconds / 5)
        margin = min(1.0, seconds / 10)
        beat_every = self.beat_every
        now = time.monotonic()
        valid_until = now + seconds
        next_lease = now + (renew_every if self.holding else try_every)
        next_beat = now
        next_resync = now + RESYNC_SECONDS
        next_prune = now
        while not self.stopped.is_set():
            if not owner.running:
                # The event loop closed without shutdown(): nothing here fires jobs any
                # more, so let another worker lead rather than renew the lease.
                self.stopped.set()
                self.sync_wanted.set()
                owner.leave([])
                return
            now = time.monotonic()
            if lease is not None and (now >= next_lease or self.try_now):
                self.try_now = False
                started = time.monotonic()
                if self.holding:
                    ok = owner.attempt("renew the scheduler lease", lease.renew)
                    if ok:
                        valid_until = started + seconds
                    if ok is False or (not ok and time.monotonic() >= valid_until - margin):
                        self.holding = False
                        owner.call_soon(owner.step_down)
                    next_lease = now + (renew_every if ok else try_every)
                else:
                    if self.try_take():
                        self.holding = True
                        valid_until = started + seconds
                        owner.call_soon(owner.become_leader)
                        next_prune = next_beat = now
                    next_lease = now + (renew_every if self.holding else try_every)
            if now >= next_beat:
                self.check_store()
                self.heartbeat()
                next_beat = now + beat_every
            # Every coordinated worker resyncs (other workers may have written the store),
            # off the loop; every deadline that passed moves on, so the wait below is never
            # for a time already past (the thread would spin).
            resyncs = lease is not None
            if now >= next_resync:
                if resyncs:
                    owner.resync()
                next_resync = now + RESYNC_SECONDS
            if self.holding and now >= next_prune:
                owner.attempt("prune the scheduler tables", owner.state.prune, time.time())
                next_prune = now + PRUNE_SECONDS
            deadline = min(next_beat, next_resync) if resyncs else next_beat
            if lease is not None:
                deadline = min(deadline, next_lease)
            self.wake.wait(max(0.0, deadline - time.monotonic()))
            self.wake.clear()

    # ------------------------------------------------------------ the store's epoch and clock

    def open_epoch(self) -> None:
        """At start (off the loop): remember the store's marker, writing one if it has none."""
        self.epoch = self.owner.state.ensure_epoch(new_epoch())
        self.known_ids = set(self.owner.registry.ids())
        self.clock_skew, self._skew_warned = None, False

    def check_store(self) -> None:
        """Look for a lost store (its marker changed or gone) and measure the clock skew."""
        owner = self.owner
        found = owner.attempt(
            "read the job store's epoch marker", lambda: (owner.state.read_epoch(),)
        )
        if found is not None and self.epoch is not None:
            if found[0] == self.epoch:
                self.known_ids = set(owner.registry.ids())
            else:
                self._recover(found[0])
        skew = owner.attempt(
            "read the job store server's clock",
            measure_skew,
            self.local_clock,
            owner.state.server_time,
        )
        if skew is not None or found is not None:
            self._judge_skew(skew)
        self.epoch_checks += 1

    def _recover(self, found: str | None) -> None:
        """The store lost its data: make its tables again, write a new marker, tell the loop.

        The job ids known before (at the last check that saw the old marker, and now) go
        with it: the coordinator states which of them are lost.
        """
        owner = self.owner
        if found is None:
            reopened = owner.attempt(
                "re-create the job store's tables", lambda: owner.state.open() or True
            )
            if reopened is None:
                return
            found = owner.attempt(
                "write the job store's epoch marker", owner.state.ensure_epoch, new_epoch()
            )
            if found is None:
                return
        old, self.epoch = self.epoch, found
        known = self.known_ids | set(owner.registry.ids())
        self.known_ids = set()
        owner.call_soon(owner.store_reset, old, found, sorted(known))

    def _judge_skew(self, skew: float | None) -> None:
        self.clock_skew = skew
        over = skew is not None and abs(skew) > CLOCK_SKEW_WARN_SECONDS
        if over and not self._skew_warned:
            self._skew_warned = True
            logger.warning(
                "scheduler worker %s: its clock is %.3f s %s the job store server's (%s); "
                "beyond %.1f s, jobs fire early or late and leases may be misjudged: keep "
                "the clocks in sync (NTP)",
                self.owner.worker_id,
                abs(skew or 0.0),
                "ahead of" if (skew or 0.0) > 0 else "behind",
                self.owner.jobstore_url,
                CLOCK_SKEW_WARN_SECONDS,
            )
        elif not over and self._skew_warned and skew is not None:
            self._skew_warned = False
            logger.info(
                "scheduler worker %s: its clock is within %.1f s of the job store server's "
                "again (%.3f s)",
                self.owner.worker_id,
                CLOCK_SKEW_WARN_SECONDS,
                skew,
            )

    def skew_problem(self) -> str | None:
        """What /health says about the clock skew, if it is over the threshold."""
        skew = self.clock_skew
        if skew is None or abs(skew) <= CLOCK_SKEW_WARN_SECONDS:
            return None
        side = "ahead of" if skew > 0 else "behind"
        return (
            f"this worker's clock is {abs(skew):.3f} s {side} the job store server's "
            f"(more than {CLOCK_SKEW_WARN_SECONDS:.1f} s)"
        )

    # ------------------------------------------------------------ heartbeats

    def heartbeat(self) -> None:
        owner = self.owner
        info = {
            "worker_id": owner.worker_id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "coordination": None if self.coordination_url is None else str(self.coordination_url),
            "role": "leader" if self.holding else "standby",
        }
        workers = owner.attempt(
            "write the scheduler heartbeat",
            owner.state.heartbeat,
            owner.worker_id,
            info,
            self.live_for,
        )
        if workers is None:
            return
        self.workers = sorted(workers, key=lambda w: str(w.get("worker_id")))
        if self.lease is not None:
            self.leader = owner.attempt("read the scheduler lease", self.lease.holder)
        self._check_neighbours(workers)

    def worker_alive(self, worker_id: str) -> bool:
        """Whether a worker may still be running. One on this host: whether its process
        exists (one stopped with SIGSTOP does: its runs may yet end). One on another host:
        whether its heartbeat is fresh (as of the last one read)."""
        if worker_id == self.owner.worker_id:
            return True
        host, _, rest = worker_id.partition(":")
        pid_text = rest.partition(":")[0]
        if host == socket.gethostname() and pid_text.isdigit():
            pid = int(pid_text)
            if pid == os.getpid():  # this process: one of its schedulers, or an earlier start
                return worker_id in _RUNNING_HERE
            return alive(pid)
        return any(w.get("worker_id") == worker_id for w in self.workers)

    def other_leader_alive(self) -> bool:
        """Whether another worker that says it leads is alive (as of the last heartbeat)."""
        host = socket.gethostname()
        for worker in self.workers:
            if worker.get("worker_id") == self.owner.worker_id or worker.get("role") != "leader":
                continue
            if worker.get("host") != host or alive(worker.get("pid")):
                return True
        return False

    def _check_neighbours(self, workers: list[Message]) -> None:
        """Warn, once per worker, about another worker that shares the store unsafely."""
        mine = None if self.coordination_url is None else str(self.coordination_url)
        host, pid = socket.gethostname(), os.getpid()
        for worker in workers:
            other = str(worker.get("worker_id"))
            if other == self.owner.worker_id or other in self._warned:
                continue
            same_host = worker.get("host") == host
            if same_host and worker.get("pid") != pid and not alive(worker.get("pid")):
                continue  # the heartbeat of a process that has died
            theirs = worker.get("coordination")
            if mine is None or theirs is None:
                problem = "and neither coordinates with the other: each of them fires every job"
            elif mine != theirs:
                problem = (
                    f"coordinated by {theirs} where this one uses {mine}: each side elects "
                    "its own leader and fires every job"
                )
            elif (
                self.coordination_url is not None
                and self.coordination_url.kind == "file"
                and (worker.get("host") != host)
            ):
                problem = (
                    "from another host, coordinated by a lock file: a file lock only "
                    "coordinates workers on one host"
                )
            else:
                continue
            self._warned.add(other)
            logger.warning(
                "several schedulers share the job store %s unsafely: worker %s (host %s, "
                "pid %s) uses it too %s. Give every worker the same "
                "SchedulerConfig(coordination=...): 'file:///path/scheduler.lock' on one "
                "host, a 'postgresql://' or 'redis://' URL across hosts",
                self.owner.jobstore_url,
                other,
                worker.get("host"),
                worker.get("pid"),
                problem,
            )


def alive(pid: Any) -> bool:
    """Whether the process ``pid`` on this host is alive (True when it cannot be told)."""
    if not isinstance(pid, int):
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
