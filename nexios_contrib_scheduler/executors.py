"""Engines that run a job's fires in other processes: the scheduler decides when, the
engine's workers run the task.

``SchedulerConfig(executors={"arq": ArqExecutor(RedisSettings())})`` names an engine;
``add_job("send_report", trigger, executor="arq")`` sends each fire of the job to it. The
fire is claimed in the job store before it is sent, like a run in this process, and the
message carries the fire's key (``"<job id>@<microseconds>"``) as its id: a resend after a
leader crash is refused by the engine as a duplicate. The outcome of each fire is read back
from the engine and recorded in the job's history.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import dataclasses
import importlib
import json
import logging
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, ClassVar, Literal

from .pacing import Pacer, in_slices

logger = logging.getLogger("nexios_contrib_scheduler")

#: How a remote task is written where a job's function is stored (``records.func_ref``).
TASK_REF_PREFIX = "task:"

#: Most fires sent to an engine in one batch.
SEND_BATCH = 500
#: Most answers to sends handed to their fires' runs in one turn of the event loop.
ANSWERS_SLICE = 64

RemoteOutcomeKind = Literal["success", "error", "timeout", "missed"]


@dataclass(frozen=True)
class RemoteTask:
    """A task run by an engine's workers, by the name the engine knows it by.

    It stands where a job's function would be; calling it in this process is a mistake,
    and says so.
    """

    name: str

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(
            f"task {self.name!r} is sent to a remote engine's workers, and this worker has "
            "no executor for it (SchedulerConfig(executors=...))"
        )

    @property
    def ref(self) -> str:
        return TASK_REF_PREFIX + self.name


def remote_task_stand_in(*args: Any, **kwargs: Any) -> None:
    """What APScheduler's own job of a remote task points to, so that the job can be
    stored by reference; the scheduler sends the task instead of calling this."""
    raise RuntimeError("a remote task runs on its engine's workers, not in this process")


@dataclass(frozen=True)
class RemoteFire:
    """One fire to send: ``id`` is the message's id (the fire's key)."""

    id: str
    task: RemoteTask
    args: tuple[Any, ...]
    kwargs: Mapping[str, Any]
    #: When the message must no longer start (the end of the fire's misfire grace time,
    #: UTC); None: the engine's own default.
    expires_at: datetime | None
    #: The job's ``timeout``: the engine's time limit for the run, where it takes one.
    time_limit: float | None


@dataclass(frozen=True)
class RemoteOutcome:
    """How a sent fire ended, as the engine reports it."""

    outcome: RemoteOutcomeKind
    start: datetime | None
    end: datetime | None
    error: str | None = None
    #: The engine's worker that ran it, where the engine says.
    worker: str | None = None


class RemoteExecutor(abc.ABC):
    """An engine that runs fires in other processes. Subclasses send a fire and read back
    outcomes; the scheduler claims, sends, waits and records.

    ``poll_interval``: seconds between two reads of the outcomes of fires in flight (one
    read for all of them). ``outcome_wait``: how long after a fire is sent its outcome is
    awaited; a fire with none by then is recorded as ``sent`` (it keeps its
    ``max_instances`` slot until then). None: until it comes.
    """

    #: The engine's name, shown as where a job runs.
    engine: ClassVar[str]

    def __init__(self, *, poll_interval: float = 0.25, outcome_wait: float | None = 3600.0) -> None:
        if isinstance(poll_interval, bool) or not isinstance(poll_interval, (int, float)):
            raise TypeError(f"poll_interval must be a number of seconds, not {poll_interval!r}")
        if not 0.01 <= poll_interval <= 60:
            raise ValueError(
                f"poll_interval must be between 0.01 and 60 seconds, got {poll_interval!r}"
            )
        if outcome_wait is not None and (
            isinstance(outcome_wait, bool)
            or not isinstance(outcome_wait, (int, float))
            or not outcome_wait > 0
        ):
            raise ValueError(
                f"outcome_wait must be a positive number of seconds or None, got {outcome_wait!r}"
            )
        self.poll_interval = float(poll_interval)
        self.outcome_wait = None if outcome_wait is None else float(outcome_wait)
        # Fires handed to ``send`` and not yet sent, each with the future of its answer.
        self._batch: list[tuple[RemoteFire, asyncio.Future[bool]]] = []
        self._flusher: asyncio.Task[None] | None = None  # sending them, while not done
        self._pacer = Pacer()

    @property
    def tracks_outcomes(self) -> bool:
        """Whether outcomes can be read back (False: every fire is recorded as sent)."""
        return True

    @abc.abstractmethod
    def task(self, func_or_name: Any) -> RemoteTask:
        """The task a job names: its registered name, or the object the engine registers.
        Raises ``TypeError`` for what cannot name a task, ``LookupError`` for a task the
        engine is known not to have."""

    async def send(self, fire: RemoteFire) -> bool:
        """Send ``fire``; False if the engine already holds a message with its id.

        The fires sent in one turn of the event loop (a scheduling pass submits a slice of
        due jobs in one turn) go to the engine together (``send_many``), up to
        ``SEND_BATCH`` at a time."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[bool] = loop.create_future()
        self._batch.append((fire, answer))
        if self._flusher is None or self._flusher.done():
            self._flusher = loop.create_task(self._flush())
        return await answer

    async def _flush(self) -> None:
        await asyncio.sleep(0)  # the rest of this turn's fires join the batch
        while self._batch:
            batch, self._batch = self._batch[:SEND_BATCH], self._batch[SEND_BATCH:]
            try:
                answers = await self.send_many([fire for fire, _ in batch])
            except Exception as exc:
                answers = [exc] * len(batch)
            # The fires' runs go on (to await their outcomes) as their answers are set: a
            # slice of them per turn of the loop, sized from what the slices before cost.
            await in_slices(
                self._pacer, list(zip(batch, answers, strict=True)), ANSWERS_SLICE, _answer
            )

    @abc.abstractmethod
    async def send_many(self, fires: list[RemoteFire]) -> list[bool | Exception]:
        """Send the fires: for each, True if sent, False if the engine holds a message
        with its id already, or the exception that kept it from being sent."""

    @abc.abstractmethod
    async def outcomes(self, ids: Collection[str]) -> dict[str, RemoteOutcome]:
        """The outcomes known of the given fires (those still running are left out)."""

    async def not_started(self, ids: Collection[str]) -> set[str]:
        """Of the given fires, whose messages have expired, those the engine says never
        started (and so never will: the broker dropped them). An engine that records an
        expired message as an outcome of its own answers with none."""
        return set()

    @abc.abstractmethod
    async def known(self, ids: Collection[str]) -> set[str]:
        """Which of the given fires the engine holds (queued, running or with an outcome):
        the fires of a leader that stopped, which it may or may not have sent."""

    async def close(self) -> None:
        """Let go of the engine's connections."""
        return None


def _answer(sent: tuple[tuple[RemoteFire, asyncio.Future[bool]], bool | Exception]) -> None:
    """Give a fire's ``send`` its answer (unless it was given up on)."""
    (_, answer), outcome = sent
    if answer.done():
        return
    if isinstance(outcome, BaseException):
        answer.set_exception(outcome)
    else:
        answer.set_result(outcome)


def _engine_module(name: str, who: str) -> Any:
    """The engine's module ``name``; an ImportError naming the extra to install if the
    engine is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        extra = name.partition(".")[0]
        raise ImportError(
            f"{who} needs {extra}: pip install 'nexios-contrib-scheduler[{extra}]'"
        ) from exc


# ---------------------------------------------------------------- Celery

#: The state a fire has in Celery's result backend from just before it is sent until a
#: worker reports on it: the next leader can then tell a fire that was sent.
CELERY_SENT = "SENT"
#: Where ``record_task_starts`` keeps when and where a fire's run started.
CELERY_START_KEY = "nexios-scheduler-start-{}"
#: The attributes of a Celery task that say how its messages are published.
PUBLISH_OPTIONS = (
    "queue",
    "routing_key",
    "exchange",
    "priority",
    "serializer",
    "delivery_mode",
    "compression",
)


class CeleryExecutor(RemoteExecutor):
    """Fires sent to Celery workers through the app's broker; outcomes read from its
    result backend.

    ``celery_app`` is the Celery app the workers run (its broker and result backend). A
    key-value result backend (Redis, the usual one) is read for the outcomes of all fires
    in flight at once; with none (``result_backend`` unset), fires are recorded as
    ``sent`` and nothing more. ``check_tasks``: refuse, at ``add_job``, a task name the
    app does not know (the app's modules, ``imports`` and ``include``, are imported to
    look); False to send names only the workers know. A job's ``timeout`` is the task's
    hard time limit (``time_limit``). The workers' app should call
    ``record_task_starts(app)``, so that each run's start and worker are known (without
    it, a run's start is when the fire was sent; with ``result_extended=True`` the worker
    is known).
    """

    engine: ClassVar[str] = "celery"

    def __init__(
        self,
        celery_app: Any,
        *,
        check_tasks: bool = True,
        poll_interval: float = 0.25,
        outcome_wait: float | None = 3600.0,
    ) -> None:
        super().__init__(poll_interval=poll_interval, outcome_wait=outcome_wait)
        celery = _engine_module("celery", "CeleryExecutor")
        if not isinstance(celery_app, celery.Celery):
            raise TypeError(f"celery_app must be a Celery app, not {type(celery_app).__name__}")
        if not isinstance(check_tasks, bool):
            raise TypeError(f"check_tasks must be True or False, not {check_tasks!r}")
        self.app = celery_app
        self.check_tasks = check_tasks
        self._imported = False
        self._tracks: bool | None = None
        self._marked: set[str] = set()  # fires marked sent here whose message is not out yet
        self._task_options: dict[str, tuple[Any, dict[str, Any]]] = {}
        # One thread sends (the broker's and the backend's clients are blocking ones),
        # in order, over the app's pooled connection; another reads the outcomes, so that
        # a read of many fires in flight does not hold up the sends.
        self._thread = concurrent.futures.ThreadPoolExecutor(1, "nexios-scheduler-celery")
        self._reader = concurrent.futures.ThreadPoolExecutor(1, "nexios-scheduler-celery-read")

    def __repr__(self) -> str:
        return f"CeleryExecutor({self.app.main!r})"

    @property
    def tracks_outcomes(self) -> bool:
        # A key-value result backend (Redis) can be read for many fires at once; the
        # disabled one (no result_backend) and the others cannot. Asked once: the app's
        # backend is made per thread, and this is asked for each fire.
        if self._tracks is None:
            self._tracks = hasattr(self.app.backend, "mget")
        return self._tracks

    def task(self, func_or_name: Any) -> RemoteTask:
        if isinstance(func_or_name, RemoteTask):
            name: Any = func_or_name.name
        elif isinstance(func_or_name, str):
            name = func_or_name
        else:
            name = getattr(func_or_name, "name", None)  # a Celery task object
        if not isinstance(name, str) or not name:
            raise TypeError(
                "a Celery job names a task: the task object or its registered name, "
                f"not {func_or_name!r}"
            )
        if self.check_tasks and name not in self.app.tasks:
            if not self._imported:
                self._imported = True
                self.app.loader.import_default_modules()
            if name not in self.app.tasks:
                known = sorted(n for n in self.app.tasks if not n.startswith("celery."))
                raise LookupError(
                    f"the Celery app {self.app.main!r} has no task {name!r}; it has "
                    f"{', '.join(map(repr, known)) or 'none'} "
                    "(CeleryExecutor(app, check_tasks=False) sends names only the workers know)"
                )
        return RemoteTask(name)

    async def send_many(self, fires: list[RemoteFire]) -> list[bool | Exception]:
        loop = asyncio.get_running_loop()
        sent: list[bool | Exception] = await loop.run_in_executor(
            self._thread, self._send_now, fires
        )
        return sent

    def _send_now(self, fires: list[RemoteFire]) -> list[bool | Exception]:
        app = self.app
        answers: list[bool | Exception] = [True] * len(fires)
        if self.tracks_outcomes:
            self._mark(fires, answers)
        declared: set[str] = set()  # the queues declared for this batch
        with app.producer_or_acquire() as producer:
            for i, fire in enumerate(fires):
                if answers[i] is not True:
                    continue
                if fire.expires_at is not None and fire.expires_at <= datetime.now(timezone.utc):
                    # Its grace ran out while it waited (behind a broker that was slow to
                    # connect, say): not sent, rather than sent with no time left to start.
                    answers[i] = TimeoutError(
                        "the fire's grace ran out before its message could be published"
                    )
                    continue
                try:
                    self._publish(producer, fire, declared)
                except Exception as exc:
                    answers[i:] = [exc] * (len(fires) - i)  # the broker is gone: the rest too
                    break
                self._marked.discard(fire.id)
        return answers

    def _publish(self, producer: Any, fire: RemoteFire, declared: set[str]) -> None:
        """Publish one fire's message as ``app.send_task`` would (the task's own
        publishing options, the app's routes, the expiry as the message's TTL, the
        publish signals and sent event), less what the scheduler does not use: its
        result object, and the Redis backend's subscription to the result (outcomes are
        read for all fires at once instead), which cost two more round trips to Redis
        for each fire. The queue a message goes to is declared once per batch
        (``declared``: the names of those declared), not once per message."""
        from kombu.common import Broadcast
        from kombu.entity import Queue

        app = self.app
        amqp = app.amqp
        name = fire.task.name
        args, kwargs = list(fire.args), dict(fire.kwargs)
        task_type, options = self._publish_options(name)
        options = amqp.router.route(dict(options), name, args, kwargs, task_type)
        if fire.expires_at is not None:
            ttl = (fire.expires_at - datetime.now(timezone.utc)).total_seconds()
            options["expiration"] = max(0.0, ttl)
        message = amqp.create_task_message(
            fire.id,
            name,
            args,
            kwargs,
            expires=fire.expires_at,
            reply_to=app.thread_oid,
            time_limit=fire.time_limit,
            create_sent_event=app.conf.task_send_sent_event,
            ignore_result=None,  # the task's own setting, on the worker
            **options,
        )
        queue = options.get("queue")
        if options.get("declare") is None and isinstance(queue, Queue):
            if not isinstance(queue, Broadcast) and queue.name not in declared:
                producer.maybe_declare(queue, retry=app.conf.task_publish_retry)
                declared.add(queue.name)
            options["declare"] = []
        amqp.send_task_message(producer, name, message, **options)

    def _publish_options(self, name: str) -> tuple[Any, dict[str, Any]]:
        """The task registered under ``name`` in this app, if any, and the publishing
        options it sets (its queue, priority, serializer...), asked once per task."""
        found = self._task_options.get(name)
        if found is None:
            app = self.app
            # An app not finalized yet is not made to (send_task does not either): its
            # tasks are then names only the workers know.
            task_type = app.tasks.get(name) if app.finalized else None
            options = {
                key: value
                for key in PUBLISH_OPTIONS
                if (value := getattr(task_type, key, None)) is not None
            }
            found = self._task_options[name] = (task_type, options)
        return found

    def _sent_prefix(self) -> bytes:
        """How a fire's ``SENT`` mark begins as the backend encodes it (empty if its
        encoding is not text that starts with the state)."""
        try:
            encoded = self.app.backend.encode({"status": CELERY_SENT})
        except Exception:
            return b""
        raw = encoded.encode() if isinstance(encoded, str) else bytes(encoded)
        return raw[:-1] if raw.startswith(b"{") and raw.endswith(b"}") else b""

    def _mark(self, fires: list[RemoteFire], answers: list[bool | Exception]) -> None:
        """Mark each fire ``SENT`` in the result backend before its message goes out (a
        leader that stops in between leaves a fire the next one follows and records as
        sent, never one it would send again); a fire marked already, not by this worker
        for this send, was sent before: False."""
        backend = self.app.backend
        keys = [backend.get_key_for_task(fire.id) for fire in fires]
        held = backend.mget(keys)
        fresh: list[int] = []
        for i, (fire, value) in enumerate(zip(fires, held, strict=True)):
            if fire.id in self._marked:
                continue  # marked by an earlier try of this send
            if value is not None:
                answers[i] = False
            else:
                fresh.append(i)
        client = getattr(backend, "client", None)
        expires = getattr(backend, "expires", None)
        if client is None or not hasattr(client, "pipeline"):
            for i in fresh:
                backend.store_result(fires[i].id, None, CELERY_SENT)
                self._marked.add(fires[i].id)
            return
        with client.pipeline(transaction=False) as pipe:
            for i in fresh:
                meta: dict[str, Any] = {"status": CELERY_SENT, "result": None}
                meta.update(traceback=None, children=[], date_done=None, task_id=fires[i].id)
                pipe.set(keys[i], backend.encode(meta), ex=expires or None)
            pipe.execute()
        self._marked.update(fires[i].id for i in fresh)

    async def outcomes(self, ids: Collection[str]) -> dict[str, RemoteOutcome]:
        if not ids or not self.tracks_outcomes:
            return {}
        loop = asyncio.get_running_loop()
        found: dict[str, RemoteOutcome] = await loop.run_in_executor(
            self._reader, self._read_outcomes, list(ids)
        )
        return found

    def _read_outcomes(self, ids: list[str]) -> dict[str, RemoteOutcome]:
        backend = self.app.backend
        keys = [backend.get_key_for_task(fire_id) for fire_id in ids]
        metas = backend.mget(keys)
        # Most fires in flight hold the mark set as they were sent: not decoded.
        sent = self._sent_prefix()
        ended = [
            (i, raw)
            for i, raw in zip(ids, metas, strict=True)
            if raw is not None and not (sent and bytes(raw).startswith(sent))
        ]
        if not ended:
            return {}
        starts = backend.mget([CELERY_START_KEY.format(fire_id) for fire_id, _ in ended])
        found: dict[str, RemoteOutcome] = {}
        for (fire_id, raw), start in zip(ended, starts, strict=True):
            try:
                meta = backend.decode_result(raw)
            except Exception as exc:
                found[fire_id] = RemoteOutcome(
                    "error", None, None, f"Celery's result could not be read: {exc}"
                )
                continue
            outcome = _celery_outcome(meta, start)
            if outcome is not None:
                found[fire_id] = outcome
        return found

    async def known(self, ids: Collection[str]) -> set[str]:
        loop = asyncio.get_running_loop()
        known: set[str] = await loop.run_in_executor(self._reader, self._known_now, list(ids))
        return known

    async def not_started(self, ids: Collection[str]) -> set[str]:
        # RabbitMQ drops a message past its expiry (its TTL) before a worker sees it, and
        # nothing is stored: the fire's state is still the mark set as it was sent.
        if not ids or not self.tracks_outcomes:
            return set()
        loop = asyncio.get_running_loop()
        gone: set[str] = await loop.run_in_executor(self._reader, self._unstarted_now, list(ids))
        return gone

    def _unstarted_now(self, ids: list[str]) -> set[str]:
        backend = self.app.backend
        metas = backend.mget([backend.get_key_for_task(fire_id) for fire_id in ids])
        starts = backend.mget([CELERY_START_KEY.format(fire_id) for fire_id in ids])
        gone: set[str] = set()
        for fire_id, raw, start in zip(ids, metas, starts, strict=True):
            if raw is None or start is not None:
                continue
            with contextlib.suppress(Exception):
                if backend.decode_result(raw).get("status") == CELERY_SENT:
                    gone.add(fire_id)
        return gone

    def _known_now(self, ids: list[str]) -> set[str]:
        if not self.tracks_outcomes:
            return set(ids)  # cannot tell: taken as sent, never sent again
        backend = self.app.backend
        values = backend.mget([backend.get_key_for_task(fire_id) for fire_id in ids])
        return {fire_id for fire_id, raw in zip(ids, values, strict=True) if raw is not None}

    async def close(self) -> None:
        loop = asyncio.get_running_loop()
        for thread in (self._thread, self._reader):
            await loop.run_in_executor(None, thread.shutdown)


def record_task_starts(celery_app: Any) -> None:
    """In the Celery app the workers run: note when and on which worker each run of a
    scheduled fire starts (one key in the result backend, kept as long as results are),
    so that its history shows the worker's start. Other tasks are left alone."""
    from celery.signals import task_prerun

    def noted(sender: Any = None, task_id: str | None = None, task: Any = None, **_: Any) -> None:
        if not task_id or "@" not in task_id or task is None:
            return
        backend = task.backend
        if not hasattr(backend, "set"):
            return
        started = {"start": time.time(), "worker": task.request.hostname}
        try:
            backend.set(CELERY_START_KEY.format(task_id), json.dumps(started))
        except Exception:
            logger.warning("could not note the start of %s", task_id, exc_info=True)

    task_prerun.connect(noted, weak=False, dispatch_uid="nexios_scheduler_task_starts")


def _celery_outcome(meta: Mapping[str, Any], start_raw: Any) -> RemoteOutcome | None:
    """How a fire went, from its meta in the result backend; None while it has not ended."""
    from celery import states

    status = meta.get("status")
    if status not in states.READY_STATES:
        return None
    start: datetime | None = None
    worker = meta.get("worker")
    if start_raw is not None:
        with contextlib.suppress(Exception):
            noted = json.loads(start_raw)
            start = datetime.fromtimestamp(float(noted["start"]), timezone.utc)
            worker = noted.get("worker") or worker
    end = _celery_time(meta.get("date_done"))
    shown = f"celery ({worker})" if worker else "celery"
    result = meta.get("result")
    if status == states.SUCCESS:
        return RemoteOutcome("success", start, end, None, shown)
    kind = type(result).__name__
    text = _describe(result)
    if status == states.REVOKED:
        if "expired" in text:
            return RemoteOutcome(
                "missed", None, None, "not started on a Celery worker before it expired", shown
            )
        return RemoteOutcome("error", start, end, f"revoked on Celery: {text}", shown)
    if kind in ("TimeLimitExceeded", "SoftTimeLimitExceeded"):
        return RemoteOutcome(
            "timeout", start, end, f"timed out on the Celery worker ({text})", shown
        )
    if kind == "WorkerLostError":
        return RemoteOutcome("error", start, end, f"the Celery worker was lost: {text}", shown)
    return RemoteOutcome("error", start, end, text, shown)


def _celery_time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return _aware(value)
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return _aware(datetime.fromisoformat(value))
    return None


# ---------------------------------------------------------------- arq


#: arq's enqueue_job, for many jobs: KEYS = the queue, then each job's key and result key;
#: ARGV = the score (enqueue time, ms), then each job's id, payload and expiry (ms).
_ARQ_ENQUEUE = """
local answers = {}
for i = 1, (#KEYS - 1) / 2 do
  local job_key, result_key = KEYS[2 * i], KEYS[2 * i + 1]
  if redis.call('EXISTS', job_key, result_key) == 0 then
    redis.call('PSETEX', job_key, ARGV[3 * i + 1], ARGV[3 * i])
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[3 * i - 1])
    answers[i] = 1
  else
    answers[i] = 0
  end
end
return answers
"""


class ArqExecutor(RemoteExecutor):
    """Fires sent to arq workers through Redis.

    ``redis_settings``: arq's ``RedisSettings`` (or a mapping of its arguments; arq's
    defaults when None). ``queue_name``: arq's queue (its default when None).
    ``functions``: the functions the arq workers register (``WorkerSettings.functions``);
    given, a job naming another is refused at ``add_job``. arq has no per-message time
    limit: a job's ``timeout`` is the worker's (``job_timeout``, or
    ``arq.func(..., timeout=)``); a run cut off by it is recorded as ``timeout``.
    """

    engine: ClassVar[str] = "arq"

    def __init__(
        self,
        redis_settings: Any = None,
        *,
        queue_name: str | None = None,
        functions: Sequence[Any] | None = None,
        poll_interval: float = 0.25,
        outcome_wait: float | None = 3600.0,
    ) -> None:
        super().__init__(poll_interval=poll_interval, outcome_wait=outcome_wait)
        RedisSettings = _engine_module("arq.connections", "ArqExecutor").RedisSettings  # noqa: N806
        if redis_settings is None:
            redis_settings = RedisSettings()
        elif isinstance(redis_settings, Mapping):
            redis_settings = RedisSettings(**redis_settings)
        elif not isinstance(redis_settings, RedisSettings):
            raise TypeError(
                "redis_settings must be arq's RedisSettings or a mapping of its arguments, "
                f"not {type(redis_settings).__name__}"
            )
        if queue_name is not None and (not isinstance(queue_name, str) or not queue_name):
            raise TypeError(f"queue_name must be a non-empty string, not {queue_name!r}")
        self.redis_settings = redis_settings
        self.queue_name = queue_name
        self._known = None if functions is None else frozenset(map(_arq_name, functions))
        self._pool: Any = None
        self._opening: asyncio.Lock | None = None
        self._script: Any = None

    def __repr__(self) -> str:
        settings = self.redis_settings
        where = f"{settings.host}:{settings.port}/{settings.database}"
        return f"ArqExecutor({where}, queue_name={self.queue_name!r})"

    def task(self, func_or_name: Any) -> RemoteTask:
        name = _arq_name(func_or_name)
        if self._known is not None and name not in self._known:
            raise LookupError(
                f"the arq workers do not register a function {name!r}; they register "
                f"{', '.join(sorted(map(repr, self._known))) or 'none'}"
            )
        return RemoteTask(name)

    async def _redis(self) -> Any:
        if self._pool is None:
            if self._opening is None:
                self._opening = asyncio.Lock()
            async with self._opening:
                if self._pool is None:
                    from arq import create_pool

                    # No retries of arq's own: a send that cannot connect fails at once,
                    # and the scheduler decides whether the fire is tried again.
                    settings = dataclasses.replace(self.redis_settings, conn_retries=0)
                    self._pool = await create_pool(settings)
        return self._pool

    async def send_many(self, fires: list[RemoteFire]) -> list[bool | Exception]:
        """arq's ``enqueue_job`` for many fires in one script call: each job written and
        queued unless arq holds its id already (queued, or with a result), atomically per
        job."""
        from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
        from arq.jobs import serialize_job

        redis = await self._redis()
        if self._script is None:
            self._script = redis.register_script(_ARQ_ENQUEUE)
        queue = self.queue_name or redis.default_queue_name
        now_ms = int(time.time() * 1000)
        now = datetime.now(timezone.utc)
        keys: list[str] = [queue]
        args: list[Any] = []
        for fire in fires:
            expires_ms = expires_extra_ms
            if fire.expires_at is not None:
                left = (fire.expires_at - now).total_seconds()
                expires_ms = max(int(left * 1000), 1)
            payload = serialize_job(
                fire.task.name,
                fire.args,
                dict(fire.kwargs),
                None,
                now_ms,
                serializer=redis.job_serializer,
            )
            keys += [job_key_prefix + fire.id, result_key_prefix + fire.id]
            args += [fire.id, payload, expires_ms]
        answers = await self._script(keys=keys, args=[now_ms, *args])
        return [bool(answer) for answer in answers]

    async def outcomes(self, ids: Collection[str]) -> dict[str, RemoteOutcome]:
        from arq.constants import result_key_prefix
        from arq.jobs import deserialize_result

        if not ids:
            return {}
        redis = await self._redis()
        ordered = list(ids)
        raw = await redis.mget([result_key_prefix + fire_id for fire_id in ordered])
        found: dict[str, RemoteOutcome] = {}
        for fire_id, value in zip(ordered, raw, strict=True):
            if value is None:
                continue
            try:
                result = deserialize_result(value)
            except Exception as exc:
                found[fire_id] = RemoteOutcome(
                    "error", None, None, f"arq's result could not be read: {exc}"
                )
                continue
            found[fire_id] = _arq_outcome(result, self.queue_name)
        return found

    async def known(self, ids: Collection[str]) -> set[str]:
        from arq.constants import in_progress_key_prefix, job_key_prefix, result_key_prefix

        redis = await self._redis()
        ordered = list(ids)
        found: set[str] = set()
        async with redis.pipeline(transaction=False) as pipe:
            for fire_id in ordered:
                pipe.exists(
                    job_key_prefix + fire_id,
                    result_key_prefix + fire_id,
                    in_progress_key_prefix + fire_id,
                )
            counts = await pipe.execute()
        for fire_id, count in zip(ordered, counts, strict=True):
            if count:
                found.add(fire_id)
        return found

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.aclose()


def _arq_name(func_or_name: Any) -> str:
    """The name arq registers a function by: a string as it is, ``arq.func(...)``'s
    ``name``, or a function's ``__name__``."""
    if isinstance(func_or_name, RemoteTask):
        return func_or_name.name
    if isinstance(func_or_name, str):
        if not func_or_name:
            raise TypeError("an arq function name must not be empty")
        return func_or_name
    name = getattr(func_or_name, "name", None)
    if isinstance(name, str) and hasattr(func_or_name, "coroutine"):
        return name  # arq.worker.Function
    name = getattr(func_or_name, "__name__", None)
    if callable(func_or_name) and isinstance(name, str) and name != "<lambda>":
        return name
    raise TypeError(
        "an arq job names the function the arq workers register: its name or the function, "
        f"not {func_or_name!r}"
    )


def _aware(moment: datetime | None) -> datetime | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _arq_outcome(result: Any, queue_name: str | None) -> RemoteOutcome:
    start, end = _aware(result.start_time), _aware(result.finish_time)
    worker = f"arq ({result.queue_name or queue_name or 'arq:queue'})"
    if result.success:
        return RemoteOutcome("success", start, end, None, worker)
    error = result.result
    if isinstance(error, (asyncio.TimeoutError, TimeoutError)):
        return RemoteOutcome("timeout", start, end, "timed out on the arq worker", worker)
    text = _describe(error)
    if type(error).__name__ == "JobExecutionFailed" and "expired" in text:
        return RemoteOutcome(
            "missed", None, None, "not started on an arq worker before it expired", worker
        )
    return RemoteOutcome("error", start, end, text, worker)


def _describe(error: Any) -> str:
    if isinstance(error, BaseException):
        text = str(error)
        return f"{type(error).__name__}: {text}" if text else type(error).__name__
    return repr(error)


__all__ = [
    "ArqExecutor",
    "CeleryExecutor",
    "RemoteExecutor",
    "RemoteFire",
    "RemoteOutcome",
    "RemoteTask",
    "record_task_starts",
]
