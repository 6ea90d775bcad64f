"""The job list in pages: what a client asks for, the order of the list, and one page.

Jobs are listed oldest first: by ``created_at``, then by id for jobs created at the same
instant. Neither ever changes for a job, so a cursor (the position of the last job of a
page) still marks the same place after jobs are added or removed: a job that exists
from the first page to the last is listed exactly once, and a job added meanwhile is
listed at the end. A job replaced by ``add_job(..., replace_existing=True)`` is a new job
and moves to the end.

Without a filter, a page is read from the manager's ordered index of the jobs (see
``listing.py``): O(page + log jobs), whatever the number of jobs. A status filter or a
search has to look at every job to count the matches: that pass reads a snapshot of the
list in slices of ``SLICE`` jobs, letting the event loop run between two, so that no
stretch of it holds the loop more than a few milliseconds. Only the jobs on the page are
turned into JSON.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from bisect import bisect_right
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from ..config import JobStatus
from ..jobs import ScheduledJob
from ..listing import JobListing, Position
from .views import func_name, repr_text

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
#: Characters of a search; a longer one is refused.
SEARCH_LIMIT = 200
#: The parameters that ask for the paged answer; without them the list is a bare array.
PAGING_PARAMETERS = ("limit", "cursor")
#: Jobs a filtered page looks at between two turns of the event loop.
SLICE = 2000

_DIGITS = re.compile(r"[0-9]{1,9}")
_CURSOR_VERSION = 1


class QueryError(ValueError):
    """A parameter of the job list the API cannot take; the message says what it can."""


@dataclass(frozen=True, slots=True)
class JobQuery:
    """Which jobs to list: some statuses (None: all), a search, and a page."""

    statuses: frozenset[JobStatus] | None = None
    search: str | None = None
    limit: int = DEFAULT_LIMIT
    after: Position | None = None


@dataclass(frozen=True, slots=True)
class Page:
    """Up to ``limit`` jobs in list order, and where they stand among all that match."""

    jobs: list[ScheduledJob]
    total: int
    offset: int
    next_cursor: str | None


def wants_pages(params: Mapping[str, str]) -> bool:
    """Whether a request asked for the paged answer (it names ``limit`` or ``cursor``)."""
    return any(name in params for name in PAGING_PARAMETERS)


def parse_query(params: Mapping[str, str]) -> JobQuery:
    """The query a request's parameters describe; raises ``QueryError`` for a bad one.

    An empty value is the same as leaving the parameter out.
    """
    return JobQuery(
        statuses=parse_statuses(params.get("status")),
        search=parse_search(params.get("q")),
        limit=parse_limit(params.get("limit")),
        after=parse_cursor(params.get("cursor")),
    )


def parse_statuses(value: str | None) -> frozenset[JobStatus] | None:
    """``"ACTIVE,paused"``: one status or several separated by commas, in any case."""
    if not value:
        return None
    wanted: set[JobStatus] = set()
    for part in value.split(","):
        name = part.strip().upper()
        if not name:
            continue
        try:
            wanted.add(JobStatus(name))
        except ValueError:
            allowed = ", ".join(s.value for s in JobStatus)
            raise QueryError(
                f"unknown status {_quote(part.strip())}: use one of {allowed}, "
                "or several separated by commas"
            ) from None
    return frozenset(wanted) or None


def parse_search(value: str | None) -> str | None:
    """The text to look for, folded for a case-insensitive match."""
    if value is None or not value.strip():
        return None
    if len(value) > SEARCH_LIMIT:
        raise QueryError(f"q is {len(value)} characters long: a search may be up to {SEARCH_LIMIT}")
    return value.strip().casefold()


def parse_limit(value: str | None) -> int:
    if not value:
        return DEFAULT_LIMIT
    if not _DIGITS.fullmatch(value) or not 1 <= int(value) <= MAX_LIMIT:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {_quote(value)}")
    return int(value)


def parse_cursor(value: str | None) -> Position | None:
    """The position a cursor from ``encode_cursor`` holds."""
    if not value:
        return None
    try:
        padded = value + "=" * (-len(value) % 4)
        raw = base64.b64decode(padded.encode("ascii"), altchars=b"-_", validate=True)
        data = json.loads(raw)
        version, created, job_id = data
        when = datetime.fromisoformat(created)
        if version != _CURSOR_VERSION or not isinstance(job_id, str) or when.tzinfo is None:
            raise ValueError("not a cursor of this version")
    except (ValueError, TypeError, RecursionError):  # bad base64 or text, JSON or shape
        raise QueryError(
            f"cursor {_quote(value)} is not one this API gave: pass the next_cursor of the "
            "previous page, or no cursor for the first page"
        ) from None
    return when.astimezone(timezone.utc), job_id


def encode_cursor(position: Position) -> str:
    created, job_id = position
    data = json.dumps([_CURSOR_VERSION, created.isoformat(), job_id], ensure_ascii=False)
    return base64.urlsafe_b64encode(data.encode("utf-8")).decode("ascii").rstrip("=")


def select(jobs: Iterable[ScheduledJob], query: JobQuery) -> list[ScheduledJob]:
    """The jobs that have one of the query's statuses and contain its search."""
    if query.statuses is None and query.search is None:
        return list(jobs)
    matches = _matcher(query)
    return [job for job in jobs if matches(job)]


async def page(listing: JobListing, query: JobQuery) -> Page:
    """The page of the listed jobs that ``query`` asks for."""
    if query.statuses is None and query.search is None:
        following = listing.following(query.after, query.limit + 1)
        chosen = following.jobs
        return Page(
            jobs=[job for _, job in chosen[: query.limit]],
            total=following.total,
            offset=following.before,
            next_cursor=_next_cursor([where for where, _ in chosen], query.limit),
        )
    positions, jobs = listing.ordered()
    start = 0 if query.after is None else bisect_right(positions, query.after)
    matches = _matcher(query)
    before = after = 0
    shown: list[int] = []  # the first limit + 1 matches after the cursor, by index
    for low in range(0, len(jobs), SLICE):
        if low:
            await asyncio.sleep(0)
        for index in range(low, min(low + SLICE, len(jobs))):
            if matches(jobs[index]):
                if index < start:
                    before += 1
                else:
                    after += 1
                    if len(shown) <= query.limit:
                        shown.append(index)
    return Page(
        jobs=[jobs[index] for index in shown[: query.limit]],
        total=before + after,
        offset=before,
        next_cursor=_next_cursor([positions[index] for index in shown], query.limit),
    )


def _next_cursor(positions: list[Position], limit: int) -> str | None:
    """The cursor after the last of ``limit`` jobs shown, if one more job follows them."""
    return encode_cursor(positions[limit - 1]) if len(positions) > limit else None


def _matcher(query: JobQuery) -> Callable[[ScheduledJob], bool]:
    statuses, search = query.statuses, query.search
    # Many jobs share a few functions: each function is named once per request (and
    # kept, so that its id is not reused for another one meanwhile).
    names: dict[int, tuple[object, str]] = {}

    def func_text(job: ScheduledJob) -> str:
        func = job.func
        known = names.get(id(func))
        if known is None or known[0] is not func:
            known = names[id(func)] = (func, func_name(func).casefold())
        return known[1]

    def matches(job: ScheduledJob) -> bool:
        if statuses is not None and job.status not in statuses:
            return False
        if search is None:
            return True
        return (
            search in job.id.casefold() or search in _casefold(job.name) or search in func_text(job)
        )

    return matches


def _casefold(value: Any) -> str:
    return value.casefold() if isinstance(value, str) else ""


def _quote(value: object) -> str:
    return repr_text(value, 120)
