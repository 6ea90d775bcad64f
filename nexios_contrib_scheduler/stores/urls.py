"""Reading the ``jobstore`` and ``coordination`` URLs of ``SchedulerConfig``.

Only the text is checked here, so a config can be built without the database drivers
installed; connecting is the job of the backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from ..errors import ConfigError

Kind = Literal["sqlite", "postgresql", "redis", "file"]

JOBSTORE_FORMS = (
    "'memory'",
    "'sqlite:///path/jobs.db'",
    "'postgresql://user:password@host:5432/db'",
    "'redis://host:6379/0'",
)
COORDINATION_FORMS = (
    "None",
    "'file:///path/scheduler.lock'",
    "'postgresql://user:password@host:5432/db'",
    "'redis://host:6379/0'",
)

_SCHEMES: dict[str, Kind] = {
    "sqlite": "sqlite",
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "postgresql+psycopg2": "postgresql",
    "redis": "redis",
    "rediss": "redis",
    "file": "file",
}
_NAMESPACE = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")


@dataclass(frozen=True)
class StoreURL:
    """A checked backend URL: its kind and the text as given."""

    kind: Kind
    url: str

    @property
    def redacted(self) -> str:
        """The URL with any password replaced by ``***``, fit for logs and status pages."""
        return redact(self.url)

    @property
    def path(self) -> str:
        """The file path of a ``file:`` or ``sqlite:`` URL."""
        if self.kind == "file":
            parts = urlsplit(self.url)
            return parts.path if parts.netloc in ("", "localhost") else parts.netloc + parts.path
        return self.url.split(":///", 1)[1]

    def __str__(self) -> str:
        return self.redacted


def redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = netloc[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc[1]}"))


def _scheme(value: str) -> str:
    return value.split(":", 1)[0].lower() if ":" in value else ""


def parse_jobstore(value: object) -> StoreURL | None:
    """``None`` for ``"memory"``, else the checked URL; ``ValueError`` naming the forms."""
    if not isinstance(value, str):
        raise TypeError(
            f"jobstore must be a str, one of {', '.join(JOBSTORE_FORMS)}; not {value!r}"
        )
    if value == "memory":
        return None
    kind = _SCHEMES.get(_scheme(value))
    if kind is None or kind == "file":
        raise ConfigError(
            f"jobstore {redact(value)!r} is not supported: use {', '.join(JOBSTORE_FORMS)}"
        )
    if kind == "sqlite":
        path = value.split(":///", 1)[1] if ":///" in value else ""
        if not path or path.startswith(":memory:") or "?" in path:
            raise ConfigError(
                f"jobstore {value!r} needs a database file: write 'sqlite:///relative/jobs.db' "
                "or 'sqlite:////absolute/jobs.db' (an in-memory SQLite database is not shared)"
            )
    return StoreURL(kind, value)


def parse_coordination(value: object) -> StoreURL | None:
    """``None`` for no coordination, else the checked URL; ``ValueError`` naming the forms."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise TypeError(
            f"coordination must be one of {', '.join(COORDINATION_FORMS)}; not {value!r}"
        )
    kind = _SCHEMES.get(_scheme(value))
    if kind is None or kind == "sqlite":
        raise ConfigError(
            f"coordination {redact(value)!r} is not supported: use {', '.join(COORDINATION_FORMS)}"
        )
    url = StoreURL(kind, value)
    if kind == "file" and not url.path:
        raise ConfigError(
            f"coordination {value!r} needs a lock file path: write 'file:///path/scheduler.lock'"
        )
    return url


def check_namespace(value: object) -> str:
    """A prefix for the tables and keys the scheduler keeps: letters, digits, underscores."""
    if not isinstance(value, str):
        raise TypeError(f"namespace must be a str, not {value!r}")
    if not _NAMESPACE.match(value):
        raise ConfigError(
            f"namespace {value!r} must start with a letter or underscore and hold only "
            "letters, digits and underscores (at most 40 characters)"
        )
    return value
