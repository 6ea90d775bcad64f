"""APScheduler's SQLAlchemy and Redis job stores, guarded for several writers.

APScheduler reads the due jobs, submits them, then writes each job back with its next run
time. When another worker changed the job in between (paused, rescheduled or removed it),
that write would put the old state back. These subclasses remember the stored bytes of the
jobs a scheduling pass read and make that pass's write conditional on them: a job changed
meanwhile keeps the other worker's version. Every other write is APScheduler's own.
"""

from __future__ import annotations

import logging
import pickle
from datetime import datetime
from typing import Any

from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.util import datetime_to_utc_timestamp
from sqlalchemy import and_, select
from sqlalchemy.engine import Engine

logger = logging.getLogger("nexios_contrib_scheduler")


class GuardedSQLAlchemyJobStore(SQLAlchemyJobStore):  # type: ignore[misc]
    """``SQLAlchemyJobStore`` whose post-pass writes do not undo another worker's change."""

    def __init__(self, engine: Engine, tablename: str) -> None:
        super().__init__(engine=engine, tablename=tablename)
        self._seen: dict[str, bytes] = {}

    def get_due_jobs(self, now: datetime) -> list[Any]:
        timestamp = datetime_to_utc_timestamp(now)
        table = self.jobs_t
        query = (
            select(table.c.id, table.c.job_state)
            .where(table.c.next_run_time <= timestamp)
            .order_by(table.c.next_run_time)
        )
        with self.engine.begin() as connection:
            rows = connection.execute(query).all()
        jobs, seen, failed = [], {}, []
        for row in rows:
            try:
                jobs.append(self._reconstitute_job(row.job_state))
            except BaseException:
                self._logger.exception('Unable to restore job "%s" -- removing it', row.id)
                failed.append(row.id)
                continue
            seen[row.id] = row.job_state
        if failed:
            with self.engine.begin() as connection:
                connection.execute(table.delete().where(table.c.id.in_(failed)))
        self._seen = seen
        return jobs

    def get_next_run_time(self) -> datetime | None:
        # APScheduler asks for this right after the pass that read the due jobs.
        self._seen = {}
        return super().get_next_run_time()  # type: ignore[no-any-return]

    def update_job(self, job: Any) -> None:
        expected = self._seen.pop(job.id, None)
        if expected is None:
            super().update_job(job)
            return
        table = self.jobs_t
        update = (
            table.update()
            .values(
                next_run_time=datetime_to_utc_timestamp(job.next_run_time),
                job_state=pickle.dumps(job.__getstate__(), self.pickle_protocol),
            )
            .where(and_(table.c.id == job.id, table.c.job_state == expected))
        )
        with self.engine.begin() as connection:
            if connection.execute(update).rowcount == 0:
                logger.debug("job %s changed by another worker during a pass; kept", job.id)

    def remove_job(self, job_id: str) -> None:
        expected = self._seen.pop(job_id, None)
        if expected is None:
            super().remove_job(job_id)
            return
        table = self.jobs_t
        delete = table.delete().where(and_(table.c.id == job_id, table.c.job_state == expected))
        with self.engine.begin() as connection:
            connection.execute(delete)


# KEYS: jobs hash, run times zset. ARGV: id, expected state, new state, next run timestamp.
_UPDATE_IF_UNCHANGED = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if current ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
"""

# KEYS: jobs hash, run times zset. ARGV: id, expected state.
_REMOVE_IF_UNCHANGED = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""


class GuardedRedisJobStore(RedisJobStore):  # type: ignore[misc]
    """``RedisJobStore`` whose post-pass writes do not undo another worker's change."""

    def __init__(self, jobs_key: str, run_times_key: str, **connect_args: Any) -> None:
        super().__init__(jobs_key=jobs_key, run_times_key=run_times_key, **connect_args)
        self._seen: dict[str, bytes] = {}
        self._update_script = self.redis.register_script(_UPDATE_IF_UNCHANGED)
        self._remove_script = self.redis.register_script(_REMOVE_IF_UNCHANGED)

    def get_due_jobs(self, now: datetime) -> list[Any]:
        timestamp = datetime_to_utc_timestamp(now)
        job_ids = self.redis.zrangebyscore(self.run_times_key, 0, timestamp)
        if not job_ids:
            self._seen = {}
            return []
        states = self.redis.hmget(self.jobs_key, *job_ids)
        present = [(i, s) for i, s in zip(job_ids, states, strict=True) if s is not None]
        jobs: list[Any] = self._reconstitute_jobs(present)
        loaded = {job.id for job in jobs}
        self._seen = {
            (i.decode() if isinstance(i, bytes) else i): s
            for i, s in present
            if (i.decode() if isinstance(i, bytes) else i) in loaded
        }
        return jobs

    def get_next_run_time(self) -> datetime | None:
        self._seen = {}
        return super().get_next_run_time()  # type: ignore[no-any-return]

    def update_job(self, job: Any) -> None:
        expected = self._seen.pop(job.id, None)
        if expected is None:
            super().update_job(job)
            return
        state = pickle.dumps(job.__getstate__(), self.pickle_protocol)
        when = (
            "" if job.next_run_time is None else repr(datetime_to_utc_timestamp(job.next_run_time))
        )
        keys = [self.jobs_key, self.run_times_key]
        if not self._update_script(keys=keys, args=[job.id, expected, state, when]):
            logger.debug("job %s changed by another worker during a pass; kept", job.id)

    def remove_job(self, job_id: str) -> None:
        expected = self._seen.pop(job_id, None)
        if expected is None:
            super().remove_job(job_id)
            return
        self._remove_script(keys=[self.jobs_key, self.run_times_key], args=[job_id, expected])
