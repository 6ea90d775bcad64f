#!/usr/bin/env bash
# The demo app, from a fresh clone with only python3: virtualenv, install, serve on
# http://127.0.0.1:8000.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[demo]'
exec .venv/bin/nexios-scheduler demo "$@"
