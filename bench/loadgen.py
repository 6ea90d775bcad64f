"""An open-loop HTTP load generator on loopback: ``python -m bench.loadgen '<json>'``.

``{"port": P, "rate": R, "duration": D, "warmup": W}``: sends ``GET /ping`` at exactly R
requests per second (on a fixed schedule, whatever the responses do) for W + D seconds over
keep-alive connections, opening another connection whenever all are busy. The latency of a
request runs from when it was due to be sent to when its response is complete, so a server
that falls behind is charged for the queueing too. Prints ``BENCH-RESULT {...}`` with the
p50/p99/max latency of the requests due after the warm-up.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

from .stats import percentile

MARKER = "BENCH-RESULT "
REQUEST = b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def get(self) -> None:
        self.writer.write(REQUEST)
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        if length:
            await self.reader.readexactly(length)


async def run(spec: dict[str, Any]) -> dict[str, Any]:
    port, rate = int(spec["port"]), float(spec["rate"])
    warmup, duration = float(spec["warmup"]), float(spec["duration"])
    idle: list[Connection] = []
    latencies: list[float] = []
    errors = 0

    async def connect() -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return Connection(reader, writer)

    async def one(due: float, record: bool) -> None:
        nonlocal errors
        conn = idle.pop() if idle else await connect()
        try:
            await conn.get()
        except Exception:
            errors += 1
            conn.writer.close()
            return
        if record:
            latencies.append(time.perf_counter() - due)
        idle.append(conn)

    for _ in range(4):
        idle.append(await connect())
    total = int(rate * (warmup + duration))
    first_recorded = int(rate * warmup)
    start = time.perf_counter() + 0.05
    tasks = []
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due, i >= first_recorded)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.writer.close()
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies) if latencies else float("nan"),
    }


def main(argv: list[str]) -> int:
    result = asyncio.run(run(json.loads(argv[0])))
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
