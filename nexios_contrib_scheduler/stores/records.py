"""Job records as stored values: which fields persist, how they are written and read back.

Every field of ``JobRecord`` persists except the ones that only make sense inside one
process (the APScheduler trigger object, which APScheduler's own job store keeps, the
runs in progress here) so fields added to ``JobRecord`` later persist without a change
here. The function is kept as its textual reference ``module:qualname``.

A worker may not be able to import a stored job's function (during a rolling deploy, a
worker still on older code reads jobs added by newer code). APScheduler 3 deletes such a
job when it reads it; here it loads with a ``MissingFunction`` in place of the function,
which keeps the reference, so writing the job back stores the same reference and the job
stays in the store with its schedule.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import logging
import pickle
import weakref
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from apscheduler.util import obj_to_ref, ref_to_obj

from ..config import JobStatus
from ..executors import TASK_REF_PREFIX, RemoteTask, remote_task_stand_in
from ..jobs import JobRecord

logger = logging.getLogger("nexios_contrib_scheduler")

#: Fields that belong to one process and are never stored.
LOCAL_FIELDS = frozenset(
    {"schedule", "pending_next_run", "submissions", "current_instances", "history_size"}
)
#: Fields that define what a job does: a change is a new definition.
DEFINITION_FIELDS = ("func", "trigger", "args", "kwargs")
#: Stored beside the fields: when the definition was last written (epoch seconds).
DEFINED_AT = "~defined_at"

PROTOCOL = pickle.HIGHEST_PROTOCOL

# Most stored fields hold the same few values (None, 0, False, a status): their pickles
# are kept, so writing a job pickles only what is its own. Bounded, as ids and names are
# many; the common values come first.
_SHARED_KINDS = frozenset({type(None), bool, int, str, JobStatus})
_SHARED_MAX = 4096
_shared: dict[tuple[type, Any], bytes] = {}
_EMPTY_LIST = pickle.dumps([], PROTOCOL)
_EMPTY_DICT = pickle.dumps({}, PROTOCOL)
_EMPTY_TUPLE = pickle.dumps((), PROTOCOL)


@functools.cache
def persisted_fields() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(JobRecord) if f.name not in LOCAL_FIELDS)


@functools.cache
def _required_fields() -> frozenset[str]:
    return frozenset(
        f.name
        for f in dataclasses.fields(JobRecord)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )


class MissingFunction:
    """Stands for a job function this worker cannot import; ``ref`` is its reference.

    Never run on purpose (the fire is recorded missed, see ``StoreSync.claim``); calling it
    raises ``LookupError`` with ``error``.
    """

    def __init__(self, ref: str, error: str) -> None:
        self.ref = ref
        self.error = error

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        raise LookupError(self.error)

    def __repr__(self) -> str:
        return f"<MissingFunction {self.ref}>"


def resolve(ref: str) -> Callable[..., Any]:
    """The function ``ref`` names, or a ``MissingFunction`` saying why it cannot be imported
    (a remote engine's task: the task of that name)."""
    if ref.startswith(TASK_REF_PREFIX):
        return RemoteTask(ref[len(TASK_REF_PREFIX) :])
    try:
        return ref_to_obj(ref)  # type: ignore[no-any-return]
    except Exception as exc:
        # APScheduler wraps the import's own error in a LookupError: show the original.
        cause = (exc.__cause__ or exc.__context__) if isinstance(exc, LookupError) else exc
        shown = exc if cause is None else cause
        error = f"cannot import {ref!r} in this worker: {type(shown).__name__}: {shown}"
        return MissingFunction(ref, error)


#: An importable name a job's state points to in place of a function that is missing, so
#: that APScheduler restores every other attribute of the job as it does.
_STAND_IN = f"{__name__}:MissingFunction"


def load_keeping_unimportable(job_state: bytes, load: Callable[[bytes], Any]) -> Any:
    """``load(job_state)`` (a job store's own loading of a stored APScheduler job); when
    that fails because the job's function cannot be imported here, the job loaded with a
    ``MissingFunction`` that keeps its reference, so writing it back changes nothing and the
    job stays in the store with its schedule. APScheduler would delete it."""
    try:
        return load(job_state)
    except Exception:
        stand_in = with_stand_in(job_state)
        if stand_in is None:
            raise
    state, missing = stand_in
    job = load(state)
    job.func_ref, job.func = missing.ref, missing
    return job


def with_stand_in(job_state: bytes) -> tuple[bytes, MissingFunction] | None:
    """For a stored APScheduler job that failed to load: if that is because its function
    cannot be imported here, its state pointing to an importable stand-in, and the
    ``MissingFunction`` to put on the loaded job; None if the failure is another one."""
    try:
        state = pickle.loads(job_state)
        ref = state["func"]
    except Exception:
        return None
    func = resolve(ref) if isinstance(ref, str) else None
    if not isinstance(func, MissingFunction):
        return None
    return pickle.dumps({**state, "func": _STAND_IN}, PROTOCOL), func


def func_ref(func: Callable[..., Any]) -> str:
    if isinstance(func, (MissingFunction, RemoteTask)):
        return func.ref
    return str(obj_to_ref(func))


def encode(record: JobRecord, names: Iterable[str] | None = None) -> dict[str, bytes]:
    """The record's stored fields (``names``: these only) as pickled values."""
    fields: dict[str, bytes] = {}
    shared, shared_kinds = _shared, _SHARED_KINDS
    for name in persisted_fields() if names is None else names:
        value = getattr(record, name)
        kind = type(value)
        if kind in shared_kinds:  # the common case first: a None, a count, a flag
            pickled = shared.get((kind, value))
            if pickled is not None:
                fields[name] = pickled
                continue
        elif name == "func":
            value = func_ref(value)
        elif kind is deque:
            value = list(value)
        try:
            fields[name] = _dumps(value)
        except Exception as exc:  # a field that cannot be pickled stays in this process
            logger.warning("job %s: field %r cannot be stored: %s", record.id, name, exc)
    return fields


def _utc_template() -> tuple[bytes, bytes] | None:
    """The pickle of a UTC datetime around its 10 bytes of state, so that one is written
    without the pickler looking up its classes (15 us a datetime, against 1 us); None if
    this interpreter's pickles of two datetimes do not differ in exactly those bytes."""
    one = datetime(2001, 2, 3, 4, 5, 6, 7, tzinfo=timezone.utc)
    other = datetime(2099, 12, 31, 23, 59, 59, 999999, tzinfo=timezone.utc, fold=1)
    pickled, state = pickle.dumps(one, PROTOCOL), _state(one)
    if len(state) != 10 or pickled.count(state) != 1:
        return None
    head, _, tail = pickled.partition(state)
    if head + _state(other) + tail != pickle.dumps(other, PROTOCOL):
        return None
    return head, tail


def _state(moment: datetime) -> bytes:
    reduced: Any = moment.__reduce_ex__(PROTOCOL)
    state: bytes = reduced[1][0]
    return state


_UTC_PICKLE = _utc_template()


def _dumps(value: Any) -> bytes:
    kind = type(value)
    if kind is datetime and value.tzinfo is timezone.utc and _UTC_PICKLE is not None:
        return _UTC_PICKLE[0] + _state(value) + _UTC_PICKLE[1]
    if kind in _SHARED_KINDS:
        key = (kind, value)
        pickled = _shared.get(key)
        if pickled is None:
            pickled = pickle.dumps(value, PROTOCOL)
            if len(_shared) < _SHARED_MAX:
                _shared[key] = pickled
        return pickled
    if not value and kind in (list, dict, tuple):
        return _EMPTY_LIST if kind is list else _EMPTY_DICT if kind is dict else _EMPTY_TUPLE
    return pickle.dumps(value, PROTOCOL)


def decode(fields: Mapping[str, bytes], job_id: str) -> dict[str, Any]:
    """Stored fields back as values; unreadable ones are left out (and logged)."""
    values: dict[str, Any] = {}
    for name, raw in fields.items():
        try:
            values[name] = pickle.loads(raw)
        except Exception as exc:
            logger.warning("job %s: stored field %r cannot be read: %s", job_id, name, exc)
    return values


def apply(record: JobRecord, values: Mapping[str, Any]) -> None:
    """Set stored values on a record (the function only if its reference changed)."""
    known = set(persisted_fields())
    for name, value in values.items():
        if name not in known:
            continue
        if name == "func":
            if value != func_ref(record.func):
                record.func = resolve(value)
        elif name == "history":
            record.history = deque(value, maxlen=record.history_size)
        else:
            setattr(record, name, value)


def build(
    values: Mapping[str, Any], func: Callable[..., Any] | None, history_size: int
) -> JobRecord:
    """A new record from stored values; ``func`` is resolved from its reference if not given
    (a ``MissingFunction`` if it cannot be imported).

    Raises ``ValueError`` when a required field is missing.
    """
    known = set(persisted_fields())
    kwargs = {k: v for k, v in values.items() if k in known}
    missing = sorted(_required_fields() - set(kwargs) - {"history_size"})
    if missing:
        raise ValueError(f"stored job lacks {', '.join(missing)}")
    if func is None or func is remote_task_stand_in:  # a remote task: named in the fields
        func = resolve(kwargs["func"])
    kwargs["func"] = func
    kwargs["history"] = deque(kwargs.get("history", ()), maxlen=history_size)
    kwargs["history_size"] = history_size
    return JobRecord(**kwargs)


def same_definition(a: JobRecord, b: JobRecord) -> bool:
    """Same function, arguments and trigger."""
    try:
        same_func = func_ref(a.func) == func_ref(b.func)
    except ValueError:
        same_func = a.func is b.func
    return same_func and a.args == b.args and a.kwargs == b.kwargs and a.trigger == b.trigger


def check_storable(func: Callable[..., Any], args: Any, kwargs: Any, store: str) -> None:
    """Refuse what a persistent job store cannot keep, naming the function.

    The store keeps a reference ``module:qualname`` to the function, so it must be a
    function importable by that name from any worker.
    """
    name = getattr(func, "__qualname__", None) or repr(func)
    reason = None if _known_storable(func, name) else _unstorable(func, name)
    if reason is not None:
        raise ValueError(
            f"job function {name!r} is {reason}: the {store} job store keeps the function "
            "as a reference 'module:name' that every worker imports, so use a function "
            "defined at the top level of a module"
        )
    try:
        pickle.dumps((args, kwargs), PROTOCOL)
    except Exception as exc:
        raise ValueError(
            f"the args or kwargs of job function {name!r} cannot be stored in the {store} "
            f"job store (they are pickled): {exc}"
        ) from None


# Functions found storable, by the name they had then: most jobs share a few functions,
# and the import check behind the verdict is the costly part of an add.
_storable: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _known_storable(func: Any, name: str) -> bool:
    try:
        return _storable.get(func) == name
    except TypeError:  # not weakly referable, or not hashable
        return False


def _unstorable(func: Any, name: str) -> str | None:
    reason = _why_unstorable(func, name)
    if reason is None:
        with contextlib.suppress(TypeError):  # not weakly referable: checked every time
            _storable[func] = name
    return reason


def _why_unstorable(func: Any, name: str) -> str | None:
    if isinstance(func, RemoteTask):
        return None  # kept by its name
    if isinstance(func, functools.partial):
        return "a functools.partial"
    if inspect.ismethod(func) and not inspect.isclass(func.__self__):
        return "a bound method"
    routine = inspect.isfunction(func) or inspect.ismethod(func) or inspect.isbuiltin(func)
    if not (routine or inspect.isclass(func)):
        return "a callable object, not a function"
    if "<lambda>" in name:
        return "a lambda"
    if "<locals>" in name:
        return "a function defined inside another function"
    try:
        ref = func_ref(func)
        found = ref_to_obj(ref)
    except Exception:
        return "not importable by its module and name"
    if found != func:
        return f"not what {ref!r} imports"
    return None
