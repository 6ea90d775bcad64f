"""One workload for one system in this process: ``python -m bench.worker '<json spec>'``.

The spec is ``{"workload": ..., "system": ..., "params": {...}}``; the figures are printed
as one line, ``BENCH-RESULT <json>``, on stdout.
"""

from __future__ import annotations

import asyncio
import json
import sys

# Every system runs in a process that has imported Nexios, as the app a scheduler serves
# would have: Python's full garbage collections then walk heaps of about the same size.
import nexios  # noqa: F401

from .persistent import PERSISTENT_WORKLOADS
from .workloads import ASYNC_WORKLOADS, SYNC_WORKLOADS

MARKER = "BENCH-RESULT "


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    name, system, params = spec["workload"], spec["system"], spec["params"]
    if name in SYNC_WORKLOADS:
        result = SYNC_WORKLOADS[name](system, params)
    elif name in PERSISTENT_WORKLOADS:
        result = asyncio.run(PERSISTENT_WORKLOADS[name](system, params))
    else:
        result = asyncio.run(ASYNC_WORKLOADS[name](system, params))
    print(MARKER + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
