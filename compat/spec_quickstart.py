# The spec's "Quick Start" (steps 1-3), unchanged but for the import lines.
from nexios import NexiosApp

from nexios_contrib_scheduler import setup_scheduler

app = NexiosApp()
scheduler = setup_scheduler(app)

import asyncio


async def my_task():
    """A periodic task that runs every 30 seconds."""
    print("tick")


from nexios_contrib_scheduler import IntervalTrigger

scheduler.add_job(my_task, IntervalTrigger(seconds=30))
