"""The side-by-side benchmark: this package, raw APScheduler 3 and nexios_contrib.scheduler.

Run ``python -m bench`` for the full table (several minutes) or ``python -m bench --quick``
for small sizes (under 30 s). See ``docs/performance.md`` for the workloads and results.
"""
