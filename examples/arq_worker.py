"""The arq worker of examples/arq_app.py: the functions its jobs name.

Run it with ``arq examples.arq_worker.WorkerSettings`` from the repository root (Redis on
127.0.0.1:6379, or ``REDIS_URL``).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

from arq import func
from arq.connections import RedisSettings


async def send_report(ctx: dict[str, Any], kind: str) -> str:
    # ctx["job_id"] is the fire's key, "<job id>@<microseconds>": the same on every try.
    print(f"report {kind!r} for fire {ctx['job_id']}")
    return kind


async def rebuild_index(ctx: dict[str, Any]) -> None:
    print(f"index rebuilt for fire {ctx['job_id']}")


class WorkerSettings:
    functions: ClassVar[list[Any]] = [send_report, func(rebuild_index, timeout=600)]
    redis_settings = RedisSettings.from_dsn(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"))
