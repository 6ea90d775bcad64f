"""scheduler_router: the admin API, the dashboard page and metrics as one Nexios router."""

from __future__ import annotations

import functools
import http
import logging
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from operator import attrgetter
from typing import TYPE_CHECKING, Any

from nexios.dependencies import Depend
from nexios.exceptions import HTTPException, NotFoundException
from nexios.http import Request, Response
from nexios.http.response import JSONResponse
from nexios.openapi.models import Query, Schema  # type: ignore[attr-defined]
from nexios.routing import Route, Router
from nexios.routing._utils import get_route_path
from nexios.types import Receive, Scope, Send
from pydantic import ValidationError

from ..config import JobStatus, zone_label
from ..errors import JobNotFoundError, SchedulerError
from ..integration import get_scheduler
from ..jobs import ScheduledJob
from ..manager import SchedulerManager
from ..triggers import trigger_from_dict
from .dashboard import render_dashboard
from .models import ErrorOut, HealthOut, JobDetailOut, JobListOut, JobOut, PauseIn, TriggerIn
from .paging import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    SEARCH_LIMIT,
    QueryError,
    page,
    parse_query,
    select,
    wants_pages,
)
from .security import RequestRefusedError, check_same_origin, normalize_origin, read_json_body
from .views import job_detail_view, job_view, repr_text, text

if TYPE_CHECKING:
    from .metrics import SchedulerCollector

TAG = "scheduler"
NEXT_RUN_TIMES = 5
#: Characters of an error message sent to a client; longer ones are cut.
MESSAGE_LIMIT = 300

logger = logging.getLogger("nexios_contrib_scheduler")

# Errors a trigger's constructor or the rescheduling raise for a value they cannot take
# (an interval of 10**400 seconds, a date past year 9999): the client's mistake, so 422.
_BAD_VALUE_ERRORS = (TypeError, ValueError, ArithmeticError, RecursionError)

_GUARD_HINT = (
    "pass dependencies=[Depend(require_admin)] with a dependency that raises "
    "HTTPException(401) or HTTPException(403) for anyone who may not manage jobs, or "
    "allow_unauthenticated=True to serve it to everyone who can reach the app"
)


def scheduler_router(
    prefix: str = "/scheduler",
    dependencies: Sequence[Depend | Callable[..., Any]] | None = None,
    read_only: bool = False,
    allow_unauthenticated: bool = False,
    *,
    trusted_origins: Iterable[str] = (),
    title: str = "Scheduler",
    refresh_seconds: float = 2.0,
    show_arguments: bool = False,
) -> Router:
    """A Nexios router serving the scheduler's admin API, dashboard and metrics.

    Mount it with ``app.mount_router(scheduler_router(dependencies=[Depend(guard)]))``; the
    dashboard is then at ``{prefix}/`` and the JSON API under ``{prefix}/jobs`` and
    ``{prefix}/health`` (tag ``scheduler`` in the app's OpenAPI document), Prometheus
    metrics at ``{prefix}/metrics`` (with the ``[metrics]`` extra).

    ``dependencies`` guard every route: each is a Nexios ``Depend`` (or a plain provider
    function) that raises ``HTTPException(401/403)`` to refuse a request. Without one the
    router refuses to be built, unless ``allow_unauthenticated=True``. ``read_only=True``
    serves the GET routes only. State changes are POST, PUT or DELETE, take JSON or no
    body, and are refused when a browser says another site sent them; list other origins
    you serve the dashboard from (a separate admin host) in ``trusted_origins``.
    ``title`` heads the dashboard; ``refresh_seconds`` is how often it polls.

    Jobs are shown with their arguments' types only (``"<hidden str>"``), since arguments
    often carry tokens or connection strings; ``show_arguments=True`` shows their values.
    """
    if not isinstance(prefix, str) or not prefix.startswith("/") or not prefix.strip("/"):
        raise ValueError(f"prefix must be a path such as '/scheduler', not {prefix!r}")
    guards = _check_dependencies(dependencies)
    if not guards and not allow_unauthenticated:
        raise ValueError(
            "scheduler_router manages jobs over HTTP, so it needs an auth guard: " + _GUARD_HINT
        )
    flags = (
        ("read_only", read_only),
        ("allow_unauthenticated", allow_unauthenticated),
        ("show_arguments", show_arguments),
    )
    for name, flag in flags:
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be True or False, not {flag!r}")
    if isinstance(trusted_origins, str):
        raise TypeError(
            f"trusted_origins must be a list of origins, not the str {trusted_origins!r}"
        )
    if isinstance(refresh_seconds, bool) or not isinstance(refresh_seconds, (int, float)):
        raise TypeError(f"refresh_seconds must be a number, not {refresh_seconds!r}")
    if not 0.2 <= refresh_seconds <= 3600:
        raise ValueError(f"refresh_seconds must be between 0.2 and 3600, got {refresh_seconds!r}")

    api = _AdminAPI(
        read_only=read_only,
        trusted_origins=frozenset(normalize_origin(o) for o in trusted_origins),
        title=str(title),
        refresh_seconds=float(refresh_seconds),
        show_arguments=show_arguments,
    )
    router = _AdminRouter(prefix=prefix.rstrip("/"), dependencies=guards, tags=[TAG])
    api.register(router)
    return router


def _check_dependencies(dependencies: Sequence[Any] | None) -> list[Depend]:
    if dependencies is None:
        return []
    if isinstance(dependencies, (str, bytes)) or not isinstance(dependencies, Iterable):
        raise TypeError(
            f"dependencies must be a list of Depend(...) guards, not {type(dependencies).__name__}"
        )
    guards: list[Depend] = []
    for item in dependencies:
        if isinstance(item, Depend):
            guards.append(item)
        elif callable(item):
            guards.append(Depend(item))
        else:
            raise TypeError(f"each dependency must be a Depend(...) or a function, not {item!r}")
    return guards


class _AdminRouter(Router):
    """A router that also finds its routes when the server passes a ``root_path``.

    ASGI servers (uvicorn ``--root-path``) send paths that start with the root path;
    Nexios' mount then leaves the scope as it is and the router's own routes would not
    match, so the prefix is moved into ``root_path`` here.
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> Any:
        root = scope.get("root_path", "")
        rest = get_route_path(scope)
        moved = bool(root) and not root.endswith(self.prefix) and _under(rest, self.prefix)
        if moved:
            scope["root_path"] = root + self.prefix
        try:
            return await super().__call__(scope, receive, send)
        except NotFoundException:
            if moved:
                scope["root_path"] = root
            raise


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


class _AdminRoute(Route):
    """A route that answers a wrong method with 405, listing every method of its path.

    Nexios' own ``Route.handle`` replaces the route's app with its 405 answer, so a single
    wrong-method request would break the route for good.
    """

    allowed: frozenset[str] = frozenset()
    refusal: str | None = None

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in self.methods:
            await self.app(scope, receive, send)
            return
        allow = ", ".join(sorted(self.allowed or self.methods))
        message = self.refusal or f"{scope['method']} is not allowed here; use {allow}"
        answer = JSONResponse(_error_body(405, message), status_code=405, headers={"Allow": allow})
        await answer(scope, receive, send)


def _error_body(status: int, message: str) -> dict[str, Any]:
    return {
        "status": status,
        "error": http.HTTPStatus(status).phrase,
        "message": text(message, MESSAGE_LIMIT),
    }


def _error(response: Response, status: int, message: str) -> Response:
    return _ok(response, _error_body(status, message), status)


def _ok(response: Response, data: Any, status: int = 200) -> Response:
    response.json(data, status_code=status, headers={"Cache-Control": "no-store"})
    return response


def _not_found(response: Response, job_id: str) -> Response:
    return _error(response, 404, f"No job by the id of {_quote(job_id)} was found")


def _quote(value: object) -> str:
    """``repr(value)`` short enough to quote in an error message."""
    return repr_text(value, 120)


def _answering_errors(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler``, answering a refusal with its status and any other error with a short 500.

    The traceback of an unexpected error goes to the log, never to the client.
    """

    @functools.wraps(handler)
    async def answer(request: Request, response: Response, **params: Any) -> Any:
        try:
            return await handler(request, response, **params)
        except HTTPException:
            raise
        except RequestRefusedError as refusal:
            return _error(response, refusal.status, refusal.message)
        except Exception:
            path = str(request.scope.get("root_path", "")) + request.url.path
            logger.exception("scheduler admin API: %s %s failed", request.method, path)
            return _error(
                response,
                500,
                "the scheduler admin API failed to answer; the server's log has the details",
            )

    return answer


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class _AdminAPI:
    """The handlers; each finds the app's scheduler through the request."""

    def __init__(
        self,
        *,
        read_only: bool,
        trusted_origins: frozenset[str],
        title: str,
        refresh_seconds: float,
        show_arguments: bool,
    ) -> None:
        self.read_only = read_only
        self.trusted_origins = trusted_origins
        self.title = title
        self.refresh_seconds = refresh_seconds
        self.show_arguments = show_arguments
        self._collectors: weakref.WeakKeyDictionary[SchedulerManager, SchedulerCollector] = (
            weakref.WeakKeyDictionary()
        )

    # ---------------------------------------------------------------- routing

    def register(self, router: Router) -> None:
        read: list[tuple[str, Callable[..., Any], dict[str, Any]]] = [
            ("/", self.dashboard, {"exclude_from_schema": True}),
            ("/jobs", self.list_jobs, _LIST_DOC),
            ("/jobs/{id}", self.get_job, _GET_DOC),
            ("/health", self.health, _HEALTH_DOC),
            ("/metrics", self.metrics, _METRICS_DOC),
        ]
        write: list[tuple[str, str, Callable[..., Any], dict[str, Any]]] = [
            ("POST", "/jobs/{id}/pause", self.pause_job, _PAUSE_DOC),
            ("POST", "/jobs/{id}/resume", self.resume_job, _RESUME_DOC),
            ("POST", "/jobs/{id}/run", self.run_job, _RUN_DOC),
            ("DELETE", "/jobs/{id}", self.remove_job, _REMOVE_DOC),
            ("PUT", "/jobs/{id}/trigger", self.reschedule_job, _TRIGGER_DOC),
        ]
        routes: list[_AdminRoute] = [
            _AdminRoute(path=path, handler=_answering_errors(handler), methods=["GET"], **doc)
            for path, handler, doc in read
        ]
        for method, path, handler, doc in write:
            guarded = _answering_errors(handler)
            if self.read_only:
                # A route that takes no method: every request to it gets the 405 below.
                routes.append(
                    _AdminRoute(path=path, handler=guarded, methods=[], exclude_from_schema=True)
                )
            else:
                routes.append(_AdminRoute(path=path, handler=guarded, methods=[method], **doc))
        by_path: dict[str, set[str]] = {}
        for route in routes:
            by_path.setdefault(route.raw_path, set()).update(route.methods)
        for route in routes:
            route.allowed = frozenset(by_path[route.raw_path])
            if self.read_only:
                route.refusal = "this scheduler admin API is read-only: it serves GET requests only"
            router.add_route(route)

    # ---------------------------------------------------------------- reading

    async def dashboard(self, request: Request, response: Response) -> Response:
        base = str(request.scope.get("root_path", "")).rstrip("/")
        page, headers = render_dashboard(
            base=base,
            title=self.title,
            read_only=self.read_only,
            refresh_seconds=self.refresh_seconds,
            show_arguments=self.show_arguments,
        )
        response.html(page, headers=headers)
        return response

    async def list_jobs(self, request: Request, response: Response) -> Response:
        params = dict(request.query_params)
        # ?status=ACTIVE&status=PAUSED is the same as ?status=ACTIVE,PAUSED.
        statuses = request.query_params.getlist("status")
        if statuses:
            params["status"] = ",".join(statuses)
        try:
            query = parse_query(params)
        except QueryError as exc:
            return _error(response, 422, str(exc))
        manager = _manager(request)
        if not wants_pages(params):
            only = (
                next(iter(query.statuses)) if query.statuses and len(query.statuses) == 1 else None
            )
            jobs = manager.get_jobs(only)
            return _ok(response, [self._view(job) for job in select(jobs, query)])
        found = await page(manager.job_list(), query)
        body = {
            "jobs": [self._view(job) for job in found.jobs],
            "total": found.total,
            "offset": found.offset,
            "limit": query.limit,
            "next_cursor": found.next_cursor,
        }
        return _ok(response, body)

    async def get_job(self, request: Request, response: Response, id: str) -> Response:
        manager = _manager(request)
        job = manager.get_job(id)
        if job is None:
            return _not_found(response, id)
        detail = job_detail_view(job, show_arguments=self.show_arguments, fires=NEXT_RUN_TIMES)
        return _ok(response, detail)

    def _view(self, job: ScheduledJob) -> dict[str, Any]:
        return job_view(job, show_arguments=self.show_arguments)

    async def health(self, request: Request, response: Response) -> Response:
        manager = _manager(request)
        jobs = manager.get_jobs()
        # Read in C (map and attrgetter): the dashboard asks for this at every refresh.
        by_status = Counter(map(attrgetter("status"), jobs))
        counts = {status.value: by_status[status] for status in JobStatus}
        running_jobs = sum(map(attrgetter("current_instances"), jobs))
        tz = manager.config.tzinfo
        worker_id = getattr(manager, "worker_id", None)
        data = {
            "running": manager.running,
            "role": "leader" if getattr(manager, "is_leader", True) else "standby",
            "worker_id": None if worker_id is None else str(worker_id),
            "timezone": zone_label(tz),
            "now": datetime.now(tz).isoformat(),
            "last_pass_time": _iso(getattr(manager, "last_pass_time", None)),
            "jobs": counts,
            "total_jobs": len(jobs),
            "running_jobs": running_jobs,
        }
        # A store that lost its data or a clock off the store's: still serving (200), but
        # degraded, with the reasons. No I/O: status() is as of the last maintenance turn.
        status = manager.status() if hasattr(manager, "status") else {}
        problems = [str(p) for p in status.get("problems", [])]
        data["degraded"] = bool(problems)
        data["problems"] = problems
        data["clock_skew_seconds"] = status.get("clock_skew_seconds")
        data["store_resets"] = status.get("store_resets", [])
        return _ok(response, data, 200 if manager.running else 503)

    async def metrics(self, request: Request, response: Response) -> Response:
        manager = _manager(request)
        try:
            from .metrics import SchedulerCollector, exposition
        except ModuleNotFoundError as exc:
            if (exc.name or "").split(".")[0] != "prometheus_client":
                raise
            return _error(
                response,
                501,
                "metrics need prometheus_client: pip install 'nexios-contrib-scheduler[metrics]'",
            )
        collector = self._collectors.get(manager)
        if collector is None:
            collector = self._collectors.setdefault(manager, SchedulerCollector(manager))
        body, content_type = exposition(collector)
        response.resp(body, content_type=content_type, headers={"Cache-Control": "no-store"})
        return response

    # ---------------------------------------------------------------- changing

    async def _write(self, request: Request) -> Any:
        check_same_origin(request, self.trusted_origins)
        return await read_json_body(request)

    async def pause_job(self, request: Request, response: Response, id: str) -> Response:
        body = await self._write(request)
        manager = _manager(request)
        job = manager.get_job(id)
        if job is None:
            return _not_found(response, id)
        try:
            reason = PauseIn.model_validate({} if body is None else body).reason
        except ValidationError as exc:
            return _error(response, 422, _describe_validation(exc, "pause takes"))
        if not manager.pause_job(id, reason or None):
            return _error(
                response,
                409,
                f"job {_quote(id)} has finished ({job.status.value}) and cannot be paused",
            )
        return _ok(response, self._view(job))

    async def resume_job(self, request: Request, response: Response, id: str) -> Response:
        await self._write(request)
        manager = _manager(request)
        job = manager.get_job(id)
        if job is None:
            return _not_found(response, id)
        if not manager.resume_job(id):
            return _error(
                response,
                409,
                f"job {_quote(id)} has finished ({job.status.value}) and cannot resume",
            )
        return _ok(response, self._view(job))

    async def run_job(self, request: Request, response: Response, id: str) -> Response:
        await self._write(request)
        manager = _manager(request)
        job = manager.get_job(id)
        if job is None:
            return _not_found(response, id)
        if not manager.run_job_now(id):
            return _error(response, 409, _why_not_run(manager, job))
        return _ok(response, self._view(job), 202)

    async def remove_job(self, request: Request, response: Response, id: str) -> Response:
        await self._write(request)
        if not _manager(request).remove_job(id):
            return _not_found(response, id)
        response.empty(204, headers={"Cache-Control": "no-store"})
        return response

    async def reschedule_job(self, request: Request, response: Response, id: str) -> Response:
        body = await self._write(request)
        manager = _manager(request)
        if manager.get_job(id) is None:
            return _not_found(response, id)
        if not isinstance(body, dict):
            return _error(
                response,
                422,
                "send the new trigger as a JSON object, e.g. "
                '{"type": "cron", "expr": "0 9 * * 1-5"} or {"type": "interval", "minutes": 5}',
            )
        try:
            job = manager.reschedule_job(id, trigger_from_dict(body))
        except JobNotFoundError:  # removed since the lookup above
            return _not_found(response, id)
        except _BAD_VALUE_ERRORS as exc:
            return _error(response, 422, _describe(exc))
        if job is None:
            return _not_found(response, id)
        return _ok(response, self._view(job))


def _manager(request: Request) -> SchedulerManager:
    try:
        return get_scheduler(request)
    except SchedulerError as exc:
        # The router is mounted on an app without setup_scheduler; the message says so.
        raise RequestRefusedError(500, str(exc)) from None


def _describe(exc: BaseException) -> str:
    """The exception's own message, which quotes the bad value; its type if it has none."""
    try:
        message = str(exc)
    except Exception:  # e.g. str() of an int over 4300 digits, inside the message
        message = ""
    if isinstance(exc, RecursionError):
        message = "the trigger is nested too deeply"
    return message or f"the trigger cannot be built ({type(exc).__name__})"


def _why_not_run(manager: SchedulerManager, job: ScheduledJob) -> str:
    if not manager.running:
        return f"job {_quote(job.id)} cannot run now: the scheduler is not running"
    if job.current_instances >= job.max_instances:
        return (
            f"job {_quote(job.id)} cannot run now: max_instances ({job.max_instances}) runs "
            "are already in progress"
        )
    return f"job {_quote(job.id)} cannot run now: it has finished ({job.status.value})"


def _describe_validation(exc: ValidationError, what: str) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"]) or "body"
        problems.append(f"{where}: {error['msg']}")
    return f'{what} an optional JSON object {{"reason": "..."}}: ' + "; ".join(problems)


_JOB_RESPONSES = {200: JobOut, 404: ErrorOut}
_WRITE_ERRORS = {
    403: ErrorOut,
    404: ErrorOut,
    409: ErrorOut,
    415: ErrorOut,
    422: ErrorOut,
}

_LIST_DOC: dict[str, Any] = {
    "summary": "List jobs",
    "description": (
        "Every job, or those with the given statuses and search, with its counters and "
        "history, oldest first (by created_at, then id). With limit or cursor the answer is "
        "one page: {jobs, total, offset, limit, next_cursor}; pass next_cursor as cursor "
        "for the next page. Without them it is the bare array of every matching job."
    ),
    "operation_id": "scheduler_list_jobs",
    "responses": {200: JobListOut, 422: ErrorOut},
    "parameters": [
        Query(
            name="status",
            required=False,
            description="only jobs with this status, or one of several separated by commas",
            spec=Schema(type="string", example="ACTIVE,PAUSED"),
        ),
        Query(
            name="q",
            required=False,
            description=(
                "only jobs whose id, name or function (module:name) contains this text, "
                f"in any case; up to {SEARCH_LIMIT} characters"
            ),
            spec=Schema(type="string", maxLength=SEARCH_LIMIT),
        ),
        Query(
            name="limit",
            required=False,
            description=f"jobs per page (default {DEFAULT_LIMIT}); asks for the paged answer",
            spec=Schema(type="integer", minimum=1, maximum=MAX_LIMIT, default=DEFAULT_LIMIT),
        ),
        Query(
            name="cursor",
            required=False,
            description="the previous page's next_cursor; asks for the paged answer",
            spec=Schema(type="string"),
        ),
    ],
}
_GET_DOC: dict[str, Any] = {
    "summary": "Get a job",
    "description": "One job with its run history and its next 5 fire times.",
    "operation_id": "scheduler_get_job",
    "responses": {200: JobDetailOut, 404: ErrorOut},
}
_HEALTH_DOC: dict[str, Any] = {
    "summary": "Scheduler health",
    "description": (
        "Whether the scheduler runs (503 when it does not), whether this worker is the "
        "leader or on standby, job counts by status and the time of the last scheduler pass."
    ),
    "operation_id": "scheduler_health",
    "responses": {200: HealthOut, 503: HealthOut},
}
_METRICS_DOC: dict[str, Any] = {
    "summary": "Prometheus metrics",
    "description": (
        "Job runs by outcome, run durations, missed and skipped fires, running instances, "
        "next run times and leadership, in Prometheus' text format. Needs the [metrics] extra."
    ),
    "operation_id": "scheduler_metrics",
    "responses": {200: {"description": "Prometheus text exposition format"}, 501: ErrorOut},
}
_PAUSE_DOC: dict[str, Any] = {
    "summary": "Pause a job",
    "description": "Stop a job from firing until it is resumed; the optional reason is kept.",
    "operation_id": "scheduler_pause_job",
    "request_model": PauseIn,
    "responses": {**_WRITE_ERRORS, 200: JobOut},
}
_RESUME_DOC: dict[str, Any] = {
    "summary": "Resume a job",
    "description": "Let a paused job fire again, from its next fire time after now. No body.",
    "operation_id": "scheduler_resume_job",
    "responses": {**_WRITE_ERRORS, 200: JobOut},
}
_RUN_DOC: dict[str, Any] = {
    "summary": "Run a job now",
    "description": (
        "Start an extra run at once without moving the schedule (202); 409 when the "
        "scheduler is stopped, the job has finished or max_instances runs are in progress."
    ),
    "operation_id": "scheduler_run_job",
    "responses": {**_WRITE_ERRORS, 202: JobOut},
}
_REMOVE_DOC: dict[str, Any] = {
    "summary": "Remove a job",
    "description": "Remove a job for good (204).",
    "operation_id": "scheduler_remove_job",
    "responses": {204: {"description": "removed"}, 403: ErrorOut, 404: ErrorOut, 415: ErrorOut},
}
_TRIGGER_DOC: dict[str, Any] = {
    "summary": "Reschedule a job",
    "description": (
        "Give a job a new trigger, anchored now: the trigger's type and its constructor's "
        "parameters, as Trigger.to_dict() gives them. 422 with the trigger's own error."
    ),
    "operation_id": "scheduler_reschedule_job",
    "request_model": TriggerIn,
    "responses": {**_WRITE_ERRORS, 200: JobOut},
}
