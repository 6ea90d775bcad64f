"""The bus: notifications between the workers sharing a job store.

A worker that changes a job tells the leader (``changed``/``removed``), which reloads that
job and wakes its scheduler; a worker asked to run a job now asks the leader (``run``); a
leader that lets go of the lease says so (``released``) so that another takes it at once.
Messages go through the state backend (``state.py``); a thread listens and hands them to
the event loop.
"""

from __future__ import annotations

import logging
import uuid
from typing import TYPE_CHECKING

from .state import Message

if TYPE_CHECKING:
    from .persistence import Persistence

logger = logging.getLogger("nexios_contrib_scheduler")


class Bus:
    """Sends and receives the messages of one worker."""

    def __init__(self, owner: Persistence) -> None:
        self.owner = owner

    def listen(self) -> None:
        """The listening thread: until the worker stops."""
        self.owner.state.listen(self.deliver, self.owner.leadership.stopped)

    def deliver(self, message: Message) -> None:
        owner = self.owner
        if message.get("from") == owner.worker_id:
            return
        if message.get("op") == "released":
            owner.leadership.take_now()
            return
        owner.call_soon(self.receive, message)

    def receive(self, message: Message) -> None:
        """Apply another worker's message (on the event loop)."""
        owner = self.owner
        if not owner.running or owner.stopping:
            return
        op, job_id = message.get("op"), message.get("job")
        try:
            if op in ("changed", "removed") and isinstance(job_id, str):
                owner.sync.sync_job(job_id)
            elif op == "resync":
                owner.sync.sync_all()
            elif op == "run" and isinstance(job_id, str) and owner.is_leader:
                token = f"run:{message.get('request')}"
                if owner.state.claim(job_id, token, owner.worker_id):
                    owner.run_now(job_id)
                return
            else:
                return
        except Exception:
            logger.exception("could not apply a change made by another scheduler worker")
            return
        owner.wake_scheduler()

    def announce(self, op: str, job_id: str) -> None:
        """Tell the leader that this worker changed (or removed) a job."""
        owner = self.owner
        if not owner.leadership.coordinated or owner.is_leader:
            return  # nobody else fires jobs
        message = {"op": op, "job": job_id, "from": owner.worker_id}
        owner.attempt("tell the scheduler leader about a change", owner.state.publish, message)

    def request_run(self, job_id: str, name: str) -> None:
        """Ask the leader to run a job now."""
        owner = self.owner
        request = uuid.uuid4().hex
        owner.state.publish(
            {"op": "run", "job": job_id, "request": request, "from": owner.worker_id}
        )
        logger.debug("asked the scheduler leader to run job %r (%s) now", name, job_id)

    def released(self) -> None:
        """Say that this worker let go of the lease."""
        self.owner.state.publish({"op": "released", "from": self.owner.worker_id})
