"""Checks every state-changing admin request passes before it touches the scheduler.

A browser that is logged in to the app (a session cookie, HTTP basic auth) would carry those
credentials on a request another site makes it send. Such requests are refused: browsers
say where a request comes from in ``Sec-Fetch-Site`` (and ``Origin``), and a form on
another site cannot send a JSON body without the app's CORS consent. Clients that are not
browsers send neither header and carry no ambient credentials, so they pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from nexios.http import Request

MAX_BODY_BYTES = 64 * 1024

# "none": typed in the address bar or opened from a bookmark; "same-origin": the page itself.
_SAFE_FETCH_SITES = frozenset({"same-origin", "none"})


class RequestRefusedError(Exception):
    """A request the admin API answers with ``status`` and ``message`` instead of acting."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def normalize_origin(origin: str) -> str:
    """``scheme://host[:port]`` in lower case, without a trailing slash."""
    return origin.strip().rstrip("/").lower()


def check_same_origin(request: Request, trusted_origins: Iterable[str] = ()) -> None:
    """Refuse (403) a request a browser sent on behalf of another site.

    ``Sec-Fetch-Site`` decides when present; otherwise ``Origin`` must match the request's
    own scheme and ``Host``; requests with neither header pass. Origins in
    ``trusted_origins`` always pass.
    """
    origin = request.headers.get("origin")
    if origin is not None and normalize_origin(origin) in set(trusted_origins):
        return
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None:
        if fetch_site.strip().lower() not in _SAFE_FETCH_SITES:
            raise RequestRefusedError(
                403,
                f"cross-site request refused (Sec-Fetch-Site: {fetch_site}): the scheduler "
                "admin API accepts state changes from its own pages and from non-browser "
                "clients only",
            )
        return
    if origin is None:
        return
    own = normalize_origin(f"{request.url.scheme}://{request.headers.get('host') or ''}")
    if normalize_origin(origin) != own:
        raise RequestRefusedError(
            403,
            f"cross-origin request refused (Origin: {origin}, expected {own}): pass "
            "trusted_origins=[...] to scheduler_router to allow another origin",
        )


async def read_json_body(request: Request) -> Any:
    """The request's JSON body, or ``None`` when it has none.

    A non-empty body must be declared ``application/json`` (415 otherwise), be at most
    ``MAX_BODY_BYTES`` (413) and parse (400).
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise RequestRefusedError(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")
    body: bytes = await request.body
    if not body.strip():
        return None
    if len(body) > MAX_BODY_BYTES:
        raise RequestRefusedError(413, f"request body too large: at most {MAX_BODY_BYTES} bytes")
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        shown = content_type or "none"
        raise RequestRefusedError(
            415,
            f"unsupported content type {shown!r}: send application/json or no body",
        )
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestRefusedError(400, f"the request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise RequestRefusedError(
            400, "the request body is not valid JSON here: it is nested too deeply"
        ) from None


def _refuse_constant(name: str) -> Any:
    # Python's json reads NaN and Infinity, which JSON does not have.
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(literal: str) -> float:
    number = float(literal)
    if not math.isfinite(number):
        raise ValueError(f"the number {literal[:40]} is out of range")
    return number
