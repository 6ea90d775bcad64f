"""The demo app: a Nexios app with a few jobs ticking, in memory.

Run it with ``python examples/demo.py`` (or ``nexios-scheduler demo``, the README's first
command) and open http://127.0.0.1:8000/jobs. The app itself is built by
``nexios_contrib_scheduler.demo.create_app``.
"""

from __future__ import annotations

import os
import sys

from nexios_contrib_scheduler.cli import main
from nexios_contrib_scheduler.demo import create_app

app = create_app()

if __name__ == "__main__":
    host = os.environ.get("HOST", "127.0.0.1")
    port = os.environ.get("PORT", "8000")
    sys.exit(main(["demo", "--host", host, "--port", port, *sys.argv[1:]]))
