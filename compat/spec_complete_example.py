# The spec's "Complete Example", unchanged but for the import lines.
import asyncio
import logging

from nexios import NexiosApp
from nexios.http import Request, Response

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    SchedulerDepends,
    setup_scheduler,
)

app = NexiosApp()

# --- Setup ---
scheduler = setup_scheduler(app)


# --- Jobs ---
async def every_minute():
    print("Runs every minute")


async def hourly_cleanup():
    print("Runs at the top of every hour")


async def one_off_greeting():
    print("Hello from the past!")


# --- Schedule ---
scheduler.add_job(every_minute, IntervalTrigger(seconds=60), name="minute_ticker")
scheduler.add_job(hourly_cleanup, CronTrigger("0 * * * *"), name="hourly_cleanup")
scheduler.add_job(one_off_greeting, DateTimeTrigger("2026-12-25T10:30:00"), name="xmas_greeting")


# --- Routes ---
@app.get("/jobs")
async def list_jobs(request: Request, response: Response, sd=SchedulerDepends()):
    jobs = sd.get_jobs()
    return response.json(
        [
            {
                "id": j.id,
                "name": j.name,
                "status": j.status.value,
                "next_run": j.next_run_time,
                "run_count": j.total_run_count,
            }
            for j in jobs
        ]
    )


@app.post("/jobs/{job_id}/pause")
async def pause_job(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
    ok = sd.pause_job(job_id)
    return response.json({"success": ok})


@app.post("/jobs/{job_id}/resume")
async def resume_job(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
    ok = sd.resume_job(job_id)
    return response.json({"success": ok})


@app.delete("/jobs/{job_id}")
async def remove_job(request: Request, response: Response, job_id: str, sd=SchedulerDepends()):
    ok = sd.remove_job(job_id)
    return response.json({"success": ok})


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="0.0.0.0", port=8000)
