# The spec's "Dependency Injection" handler, on the Quick Start's app; unchanged but for
# the import lines.
from spec_quickstart import app

from nexios_contrib_scheduler import IntervalTrigger, SchedulerDepends


@app.post("/schedule-task")
async def schedule_task(request, response, scheduler_dep=SchedulerDepends()):
    """Schedule a new task from an API endpoint."""
    data = await request.json

    async def process():
        # Your background logic here
        pass

    job = scheduler_dep.add_job(
        process,
        IntervalTrigger(seconds=data.get("interval", 60)),
        name=data.get("name", "api-scheduled-task"),
    )
    return response.json({"job_id": job.id, "next_run": job.next_run_time})
