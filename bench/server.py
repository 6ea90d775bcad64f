"""A trivial Nexios app under uvicorn, with or without a scheduler firing jobs.

``python -m bench.server '<json>'`` with ``{"system": "none" | <system>, "fires": N,
"spread": S, "settle": T}``: binds a loopback port, starts the app, adds ``N`` interval
jobs of 1 s whose phases are spread over S seconds (N fires per second), and prints
``READY <port>`` T seconds later, once they all run.
A line on stdin stops it; it then prints ``BENCH-RESULT {"fires_per_s": ...}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import sys
import time
from typing import Any

MARKER = "BENCH-RESULT "


class FireCounter:
    def __init__(self) -> None:
        self.count = 0

    async def fire(self) -> None:
        self.count += 1


def build_app(spec: dict[str, Any], ready: asyncio.Event, counter: FireCounter) -> Any:
    from nexios import NexiosApp

    from .systems import make_system

    app = NexiosApp()
    system_key, fires = spec["system"], int(spec["fires"])
    system = None if system_key == "none" else make_system(system_key)

    @app.get("/ping")
    async def ping(request: Any, response: Any) -> Any:
        return response.text("pong")

    async def add_jobs() -> None:
        if system is not None:
            for i in range(fires):
                system.add_every(counter.fire, 1, f"load-{i}")
                await asyncio.sleep(spec["spread"] / fires)
            await asyncio.sleep(spec["settle"])
        ready.set()

    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        if system is not None:
            await system.start()
        tasks.append(asyncio.get_running_loop().create_task(add_jobs()))

    async def shutdown() -> None:
        for task in tasks:
            task.cancel()
        if system is not None:
            await system.stop()

    app.on_startup(startup)
    app.on_shutdown(shutdown)
    return app


async def serve(spec: dict[str, Any]) -> None:
    import uvicorn

    logging.getLogger("nexios").setLevel(logging.WARNING)
    ready = asyncio.Event()
    counter = FireCounter()
    app = build_app(spec, ready, counter)
    # IPPROTO_TCP so that asyncio sets TCP_NODELAY on the accepted connections, as it does
    # when uvicorn binds the port itself.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app,
        loop="asyncio",
        http="h11",
        lifespan="on",
        log_level="warning",
        access_log=False,
    )
    server = uvicorn.Server(config)
    loop = asyncio.get_running_loop()
    serving = loop.create_task(server.serve(sockets=[sock]))
    await ready.wait()
    began, fired = time.perf_counter(), counter.count
    print(f"READY {port}", flush=True)
    # Stopped by a line on stdin (uvicorn re-raises SIGTERM after its own shutdown).
    await loop.run_in_executor(None, sys.stdin.readline)
    server.should_exit = True
    await serving
    elapsed = time.perf_counter() - began
    rate = (counter.count - fired) / elapsed if elapsed > 0 else 0.0
    print(MARKER + json.dumps({"fires_per_s": rate}), flush=True)


def main(argv: list[str]) -> int:
    asyncio.run(serve(json.loads(argv[0])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
