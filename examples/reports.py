"""An app whose jobs the ``nexios-scheduler jobs`` command can list.

Try it from the repository root: ``nexios-scheduler jobs examples.reports:app``.
"""

from nexios import NexiosApp

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerConfig,
    setup_scheduler,
)

app = NexiosApp()
scheduler = setup_scheduler(app, SchedulerConfig(timezone="Europe/Paris"))


async def sales_report() -> None:
    print("sales report")


async def year_end() -> None:
    print("happy new year")


def refresh_cache() -> None:
    print("cache refreshed")


scheduler.add_job(sales_report, CronTrigger("0 9 * * mon-fri"), id="sales", name="sales report")
scheduler.add_job(year_end, DateTimeTrigger("2099-12-31T23:59:00"), id="year-end")
scheduler.add_job(
    refresh_cache, IntervalTrigger(minutes=10), id="cache", max_instances=1, coalesce=False
)
# Paused while the new warehouse is set up: no next fire time until resumed.
scheduler.pause_job("sales", reason="warehouse migration")
scheduler.pause_job("cache")
