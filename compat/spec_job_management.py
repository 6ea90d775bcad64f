# The spec's "Job Management" examples, run against the Quick Start's scheduler and task;
# unchanged but for the import lines.
from spec_quickstart import app, my_task, scheduler

from nexios_contrib_scheduler import IntervalTrigger

scheduler.add_job(
    my_task,
    IntervalTrigger(seconds=30),
    name="my_periodic_task",
    args=("arg1",),
    kwargs={"key": "value"},
    max_instances=3,  # Max concurrent runs of this job
    misfire_grace_time=30,  # Seconds before a missed run is skipped
    coalesce=True,  # Merge missed firings into one
    id="my-job-id",  # Explicit ID (auto-generated if omitted)
)

# All jobs
all_jobs = scheduler.get_jobs()

# Filter by status
from nexios_contrib_scheduler import JobStatus

active_jobs = scheduler.get_jobs(status=JobStatus.ACTIVE)

job = scheduler.get_job("my-job-id")
if job:
    print(f"Status: {job.status}")
    print(f"Last run: {job.last_run_time}")
    print(f"Next run: {job.next_run_time}")
    print(f"Run count: {job.total_run_count}")

scheduler.pause_job("my-job-id")  # Suspends execution
paused_status = scheduler.get_job("my-job-id").status
scheduler.resume_job("my-job-id")  # Resumes and recomputes next run

removed = scheduler.remove_job("my-job-id")  # Returns True/False
