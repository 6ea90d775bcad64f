"""The dashboard: one self-contained HTML page (no CDN, no build step) over the admin API."""

from __future__ import annotations

import functools
import html
import json
import re
import secrets
from importlib.resources import files

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")


@functools.lru_cache(maxsize=1)
def _template() -> str:
    return files(__package__).joinpath("dashboard.html").read_text(encoding="utf-8")


def render_dashboard(
    *, base: str, title: str, read_only: bool, refresh_seconds: float, show_arguments: bool
) -> tuple[str, dict[str, str]]:
    """The page for a router served at ``base`` (root path and prefix), and its headers.

    The page's script and style carry a per-response nonce, and the headers forbid
    everything else: other scripts, framing by other sites, requests to other origins.
    """
    nonce = secrets.token_urlsafe(18)
    config = json.dumps(
        {
            "base": base,
            "title": title,
            "readOnly": read_only,
            "refreshMs": round(refresh_seconds * 1000),
            "showArguments": show_arguments,
        }
    )
    # Inside <script> only "</" could end the element early; \u003c keeps it JSON.
    values = {
        "nonce": nonce,
        "title": html.escape(title),
        "config": config.replace("<", "\\u003c"),
    }
    page = _PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), _template())
    headers = {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
            "frame-ancestors 'none'"
        ),
        "X-Frame-Options": "DENY",
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }
    return page, headers
