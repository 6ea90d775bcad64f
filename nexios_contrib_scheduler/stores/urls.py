"""Reading the ``jobstore`` and ``coordination`` URLs of ``SchedulerConfig``.

Only the text is checked here, so a config can be built without the database drivers
installed; connecting is the job of the backends.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import unquote, unquote_plus, urlsplit

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


# A query parameter holds a credential when its name, lower-cased, is one of these words,
# possibly after a prefix and "_" or "-" (``api_key``, ``client_secret``), or after "ssl"
# (``sslpassword``, ``sslkey``).
_SECRET_WORDS = ("password", "passwd", "pwd", "token", "secret", "key", "auth", "credential")
_SECRET_NAME = re.compile(
    r"(?:[a-z0-9]*[_-])?(?:ssl)?(?:" + "|".join(_SECRET_WORDS) + r")s?\Z", re.IGNORECASE
)
MASK = "***"
# Credential values shorter than this are not searched for in error messages: masking
# every "ab" would garble the message and hide little.
_MIN_SCRUBBED = 4


@dataclass(frozen=True)
class StoreURL:
    """A checked backend URL: its kind and the text as given.

    ``url`` is the real URL, to connect with; ``str()`` and ``repr()`` show it with its
    credentials masked, as everything else that shows a URL does.
    """

    kind: Kind
    url: str = field(repr=False)

    @property
    def redacted(self) -> str:
        """The URL with its credentials replaced by ``***``, fit for logs and status pages."""
        return redact(self.url)

    @property
    def path(self) -> str:
        """The file path of a ``file:`` or ``sqlite:`` URL."""
        if self.kind == "file":
            parts = urlsplit(self.url)
            return parts.path if parts.netloc in ("", "localhost") else parts.netloc + parts.path
        return self.url.split(":///", 1)[1]

    def scrub(self, text: str) -> str:
        """``text`` (a driver's error message, say) with this URL's credentials masked."""
        text = text.replace(self.url, self.redacted)
        for secret in sorted(_secrets(self.url), key=len, reverse=True):
            if len(secret) >= _MIN_SCRUBBED:
                text = text.replace(secret, MASK)
        return text

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:
        return f"StoreURL(kind={self.kind!r}, url={self.redacted!r})"


def is_secret_name(name: str) -> bool:
    """Whether a URL query parameter called ``name`` holds a credential."""
    return _SECRET_NAME.match(name.strip()) is not None


def redact(url: str) -> str:
    """``url`` with its password and every credential-like query value shown as ``***``.

    A URL that cannot be read is masked whole after its scheme: no part of it can be told
    safe to show.
    """
    try:
        parts = urlsplit(url)
        has_password = parts.password is not None
    except ValueError:
        return f"{_scheme(url) or 'url'}://{MASK}"
    # Rebuilt by hand: urlunsplit would turn "sqlite:///a.db" into "sqlite:/a.db".
    head, mark, tail = url.partition("?")
    if has_password:
        userinfo, host = parts.netloc.rsplit("@", 1)
        head = head.replace(parts.netloc, f"{userinfo.split(':', 1)[0]}:{MASK}@{host}", 1)
    if mark:
        query, hash_mark, fragment = tail.partition("#")
        masked = "&".join(_mask_parameter(item) for item in query.split("&"))
        tail = masked + hash_mark + fragment
    return head + mark + tail


def _mask_parameter(item: str) -> str:
    name, sep, _value = item.partition("=")
    return f"{name}={MASK}" if sep and is_secret_name(unquote_plus(name)) else item


def _secrets(url: str) -> set[str]:
    """The credential values written in ``url``, both as written and decoded."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return found
    if password:
        found |= {password, unquote(password)}
    for item in parts.query.split("&"):
        name, sep, value = item.partition("=")
        if sep and value and is_secret_name(unquote_plus(name)):
            found |= {value, unquote_plus(value)}
    return found


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
                f"jobstore {redact(value)!r} needs a database file: write 'sqlite:///relative/jobs.db' "
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
            f"coordination {redact(value)!r} needs a lock file path: write 'file:///path/scheduler.lock'"
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
