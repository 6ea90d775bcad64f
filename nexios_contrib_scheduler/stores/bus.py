"""The bus: notifications between the workers sharing a job store.

A worker that changes a job (the leader too) tells the others (``changed``/``removed``),
which reload that job off the event loop (the leader then wakes its scheduler); a worker
asked to run a job now asks the leader (``run``); a leader that lets go of the lease says
so (``released``) so that another takes it at once; a worker whose run ended after it lost
the lease (it may write no run state then) reports the outcome to the leader (``outcome``).
``changed``/``removed`` carry the sender's count of its writes (``StateBackend.counted``),
which the slow fallback compares with the counts in the store to find a lost message.
Messages go through the state backend (``state.py``); a thread listens, does the store
reads a message asks for off the event loop (through the coordinator's sync thread), and
hands the event loop only what touches the registry or the scheduler.
"""

from __future__ import annotations

import logging
import threading
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..jobs import RunRecord
from .state import Message

if TYPE_CHECKING:
    from .persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")


class Bus:
    """Sends and receives the messages of one worker."""

    def __init__(self, owner: Persistence) -> None:
        self.owner = owner
        self.listening = threading.Event()

    def listen(self) -> None:
        """The listening thread: until the worker stops (``listening`` is set once it
        hears what is sent)."""
        self.listening.clear()
        self.owner.state.listen(self.deliver, self.owner.leadership.stopped, self.listening)

    def deliver(self, message: Message) -> None:
        """Act on another worker's message (in the listening thread, off the event loop)."""
        owner = self.owner
        sender = message.get("from")
        if sender == owner.worker_id:
            return
        counted = message.get("count")
        if isinstance(sender, str) and isinstance(counted, int):
            owner.heard_message(sender, counted)
        op, job_id = message.get("op"), message.get("job")
        if op == "released":
            owner.leadership.take_now()
        elif op in ("changed", "removed") and isinstance(job_id, str):
            owner.refresh_soon(job_id)
        elif op in ("changed", "removed") and isinstance(message.get("jobs"), list):
            for one in message["jobs"]:
                if isinstance(one, str):
                    owner.refresh_soon(one)
        elif op == "resync":
            # The listener reconnected: messages sent meanwhile are lost. The counts check
            # finds whether any was (another worker's count above the counts heard, its
            # grace over) and only then reloads every job.
            owner.refresh_soon(check=True)
        elif op == "run" and isinstance(job_id, str) and owner.is_leader:
            token = f"run:{message.get('request')}"
            claimed = owner.attempt(
                "claim a run asked by another worker",
                owner.state.claim,
                job_id,
                token,
                owner.worker_id,
            )
            if claimed:
                owner.call_soon(self.run, job_id)
        elif op == "outcome" and isinstance(job_id, str) and owner.is_leader:
            run = _run_of(message)
            fire, worker = message.get("fire"), str(message.get("from"))
            if run is not None and isinstance(fire, str):
                counted = bool(message.get("counted", True))
                owner.call_soon(owner.record_outcome, job_id, fire, run, counted, worker)

    def run(self, job_id: str) -> None:
        """Run a job now, as another worker asked (on the event loop; claimed already)."""
        owner = self.owner
        if not owner.is_leader or owner.stopping:
            return
        try:
            owner.run_now(job_id)
        except Exception:
            logger.exception("could not run job %s as another scheduler worker asked", job_id)

    def announce_many(self, op: str, job_ids: list[str]) -> None:
        """Tell the other workers that this one changed (or removed) these jobs (off the
        event loop, in as few messages as fit): the leader fires them accordingly, the
        others show them."""
        owner = self.owner
        if not owner.leadership.coordinated or not job_ids:
            return
        chunk: list[str] = []
        size = 0
        for job_id in job_ids:  # PostgreSQL's NOTIFY takes at most 8,000 bytes
            if chunk and size + len(job_id) > 6000:
                self._publish_many(op, chunk)
                chunk, size = [], 0
            chunk.append(job_id)
            size += len(job_id.encode()) + 8
        self._publish_many(op, chunk)

    def _publish_many(self, op: str, job_ids: list[str]) -> None:
        owner = self.owner
        message = {"op": op, "jobs": job_ids, "from": owner.worker_id, "count": owner.state.counted}
        owner.attempt(
            "tell the other scheduler workers about a change", owner.state.publish, message
        )

    def request_run(self, job_id: str, name: str) -> None:
        """Ask the leader to run a job now (on the event loop): the writer's thread sends
        the request after this worker's writes handed over before it, and keeps it through
        a store outage like them."""
        owner = self.owner
        request = uuid.uuid4().hex
        owner.writer.publish(
            {"op": "run", "job": job_id, "request": request, "from": owner.worker_id}
        )
        logger.debug("asking the scheduler leader to run job %r (%s) now", name, job_id)

    def report_outcome(self, job_id: str, token: str, run: RunRecord, counted: bool) -> None:
        """Tell the leader how a run of this worker ended, after this worker lost the lease
        (``counted``: its start was recorded in the store)."""
        owner = self.owner
        message: Message = {
            "op": "outcome",
            "job": job_id,
            "fire": token,
            "counted": counted,
            "from": owner.worker_id,
            **{k: _iso(getattr(run, k)) for k in ("scheduled_time", "start", "end")},
            "outcome": run.outcome,
            "error": run.error,
        }
        owner.attempt("report a run's outcome to the leader", owner.state.publish, message)

    def released(self) -> None:
        """Say that this worker let go of the lease."""
        self.owner.state.publish({"op": "released", "from": self.owner.worker_id})


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _run_of(message: Message) -> RunRecord | None:
    """The run an ``outcome`` message reports; None if it is malformed."""
    try:
        times: dict[str, Any] = {
            k: None if message.get(k) is None else datetime.fromisoformat(str(message[k]))
            for k in ("scheduled_time", "start", "end")
        }
        outcome = message["outcome"]
        if outcome not in ("success", "error", "timeout", "cancelled"):
            return None
        error = message.get("error")
        return RunRecord(
            times["scheduled_time"],
            times["start"],
            times["end"],
            outcome,
            None if error is None else str(error),
        )
    except (KeyError, TypeError, ValueError):
        return None
