#!/usr/bin/env bash
# The whole test suite, from a fresh clone with only python3: services, virtualenv,
# dependencies, lint, type-check, tests.
set -euo pipefail
cd "$(dirname "$0")/.."

# PostgreSQL and Redis on loopback, for the persistence tests.
if command -v pg_isready >/dev/null && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if command -v createdb >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 &&
  ! psql -h 127.0.0.1 -U postgres -d test -Atc "select 1" >/dev/null 2>&1; then
  createdb -h 127.0.0.1 -U postgres test || true
fi
if command -v redis-cli >/dev/null && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no || true
fi
# RabbitMQ on loopback, the Celery workers' broker in the remote-executor tests.
if ! (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && command -v rabbitmq-server >/dev/null; then
  rabbitmq-server -detached || true
  for _ in $(seq 60); do
    (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && break
    sleep 1
  done
fi

# Debian's Chromium for the dashboard's browser test (Playwright drives it; it never
# downloads a browser of its own).
if [ ! -x /usr/bin/chromium ]; then
  { apt-get update -q &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; } ||
    echo "could not install chromium: the browser test will fail" >&2
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'

echo "== ruff"
.venv/bin/ruff check nexios_contrib_scheduler tests compat examples bench scripts
.venv/bin/ruff format --check nexios_contrib_scheduler tests compat examples bench scripts
echo "== mypy --strict"
.venv/bin/mypy
echo "== mkdocs build --strict"
site_dir="$(mktemp -d)"
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$site_dir"
rm -rf "$site_dir"
echo "== extras: fresh installs with no extra, [sqlalchemy], [postgres], [redis], [metrics], [arq], [celery]"
python3 scripts/check_extras.py
echo "== pytest"
.venv/bin/python -m pytest "$@"
