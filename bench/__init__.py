"""The side-by-side benchmark: this package, raw APScheduler 3 and nexios_contrib.scheduler.

Run ``python -m bench`` for the full table (several minutes) or ``python -m bench --quick``
for small sizes. ``--only persistent`` runs the persistent-store part alone: this package
and raw APScheduler 3 on SQLite, PostgreSQL and Redis. See ``docs/performance.md`` for the
workloads and results.
"""
