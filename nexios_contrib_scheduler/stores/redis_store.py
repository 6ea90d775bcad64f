"""APScheduler's Redis job store, guarded for several writers.

The same guard as ``sqlalchemy_store.py``: a scheduling pass's write-back of a job is
conditional on the job's stored bytes being those the pass read, so it does not undo a
change another worker made meanwhile (done here by Lua scripts, atomically), and it
carries the leader's fencing token, checked in the same script. A pass writes a whole
slice of jobs back in one script call (``write_back``).

Imported only for a ``redis:`` job store: it needs redis-py (the ``redis`` extra), and
nothing of SQLAlchemy.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.redis import RedisJobStore
from apscheduler.util import datetime_to_utc_timestamp

from .records import load_keeping_unimportable

logger = logging.getLogger("nexios_contrib_scheduler")


# Both begin with the fence (see state.py): KEYS[3] the fence key, ARGV[5] the leader's
# token ('' when not checked); -1 when a greater token has written.
_FENCE = """
if ARGV[5] ~= '' then
  local held = tonumber(redis.call('GET', KEYS[3]) or '0')
  if held > tonumber(ARGV[5]) then return -1 end
  redis.call('SET', KEYS[3], ARGV[5])
end
"""

# KEYS: jobs hash, run times zset, fence.
# ARGV: id, expected state, new state, next run timestamp, token.
_UPDATE_IF_UNCHANGED = (
    _FENCE
    + """
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
)

# KEYS: jobs hash, run times zset, fence. ARGV: id, expected state, -, -, token.
_REMOVE_IF_UNCHANGED = (
    _FENCE
    + """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return 1
"""
)

# A pass's write-back of a slice of jobs, each as above, the fence checked once.
# KEYS: jobs hash, run times zset, fence. ARGV[1]: token ('' when not checked), then five
# per job: 'u' (update) or 'r' (remove), id, expected state, new state, next run timestamp.
# Returns -1 when a greater token has written (nothing written), else 1 or 0 per job.
_WRITE_BACK = """
if ARGV[1] ~= '' then
  local held = tonumber(redis.call('GET', KEYS[3]) or '0')
  if held > tonumber(ARGV[1]) then return -1 end
  redis.call('SET', KEYS[3], ARGV[1])
end
local results = {}
for i = 2, #ARGV, 5 do
  local id = ARGV[i + 1]
  if redis.call('HGET', KEYS[1], id) ~= ARGV[i + 2] then
    results[#results + 1] = 0
  elseif ARGV[i] == 'r' then
    redis.call('HDEL', KEYS[1], id)
    redis.call('ZREM', KEYS[2], id)
    results[#results + 1] = 1
  else
    redis.call('HSET', KEYS[1], id, ARGV[i + 3])
    if ARGV[i + 4] == '' then
      redis.call('ZREM', KEYS[2], id)
    else
      redis.call('ZADD', KEYS[2], ARGV[i + 4], id)
    end
    results[#results + 1] = 1
  end
end
return results
"""


class GuardedRedisJobStore(RedisJobStore):  # type: ignore[misc]
    """``RedisJobStore`` whose post-pass writes do not undo another worker's change."""

    def __init__(self, jobs_key: str, run_times_key: str, **connect_args: Any) -> None:
        super().__init__(jobs_key=jobs_key, run_times_key=run_times_key, **connect_args)
        self._seen: dict[str, bytes] = {}
        #: The fence key (state.py's), the leader's token (None: not checked) and who hears
        #: of a write refused because a newer leader has written.
        self.fence_key = jobs_key + ":fence"  # the state backend sets its own
        self.fence_token: int | None = None
        self.on_fenced: Callable[[Exception], None] | None = None
        self._update_script = self.redis.register_script(_UPDATE_IF_UNCHANGED)
        self._remove_script = self.redis.register_script(_REMOVE_IF_UNCHANGED)
        self._write_back_script = self.redis.register_script(_WRITE_BACK)

    #: ``get_due_jobs`` takes a ``limit``: a pass reads no more due jobs than it submits.
    takes_due_limit = True

    def get_due_jobs(self, now: datetime, limit: int | None = None) -> list[Any]:
        timestamp = datetime_to_utc_timestamp(now)
        if limit is None:
            job_ids = self.redis.zrangebyscore(self.run_times_key, 0, timestamp)
        else:
            job_ids = self.redis.zrangebyscore(self.run_times_key, 0, timestamp, 0, limit)
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

    def _reconstitute_job(self, job_state: bytes) -> Any:
        # A job whose function this worker cannot import is kept, not deleted.
        return load_keeping_unimportable(job_state, super()._reconstitute_job)

    def get_next_run_time(self) -> datetime | None:
        self._seen = {}
        return super().get_next_run_time()  # type: ignore[no-any-return]

    # ------------------------------------------------------------ bulk adds

    _bulk: dict[str, Any] | None = None

    def begin_bulk(self) -> None:
        """From now on ``add_job`` only collects (a job added again replaces the one added
        before, as ``replace_existing``), until ``end_bulk`` writes them all at once."""
        self._bulk = {}

    def end_bulk(self) -> None:
        """Write the collected jobs in one round trip (each replacing a stored one)."""
        jobs, self._bulk = self._bulk or {}, None
        if not jobs:
            return
        pipe = self.redis.pipeline(transaction=True)
        for job in jobs.values():
            state = pickle.dumps(job.__getstate__(), self.pickle_protocol)
            pipe.hset(self.jobs_key, job.id, state)
            if job.next_run_time is None:
                pipe.zrem(self.run_times_key, job.id)
            else:
                when = datetime_to_utc_timestamp(job.next_run_time)
                pipe.zadd(self.run_times_key, {job.id: when})
        pipe.execute()

    def add_job(self, job: Any) -> None:
        if self._bulk is not None:
            self._bulk[job.id] = job
            return
        super().add_job(job)

    def update_job(self, job: Any) -> None:
        expected = self._seen.pop(job.id, None)
        if expected is None:
            super().update_job(job)
            return
        state = pickle.dumps(job.__getstate__(), self.pickle_protocol)
        when = (
            "" if job.next_run_time is None else repr(datetime_to_utc_timestamp(job.next_run_time))
        )
        keys = [self.jobs_key, self.run_times_key, self.fence_key]
        args = [job.id, expected, state, when, self._token()]
        result = self._answer(self._update_script(keys=keys, args=args))
        if result == 0:
            logger.debug("job %s changed by another worker during a pass; kept", job.id)

    def remove_job(self, job_id: str) -> None:
        expected = self._seen.pop(job_id, None)
        if expected is None:
            super().remove_job(job_id)
            return
        keys = [self.jobs_key, self.run_times_key, self.fence_key]
        self._answer(self._remove_script(keys=keys, args=[job_id, expected, "", "", self._token()]))

    def write_back(self, updated: Sequence[Any], removed: Sequence[str]) -> set[str]:
        """A pass's write-back of a slice of jobs, in one script call: ``updated`` moved on,
        ``removed`` (no fire left) deleted, each only if its stored bytes are those the pass
        read, the whole fenced (``update_job`` and ``remove_job`` for many jobs). Returns the
        ids of removed jobs that were not in the store (``remove_job`` would have raised)."""
        seen = self._seen
        args: list[Any] = [self._token()]
        written: list[str] = []
        missing: set[str] = set()
        for job in updated:
            expected = seen.pop(job.id, None)
            if expected is None:
                super().update_job(job)  # not read by this pass: APScheduler's own write
                continue
            state = pickle.dumps(job.__getstate__(), self.pickle_protocol)
            when = job.next_run_time
            args += ["u", job.id, expected, state]
            args.append("" if when is None else repr(datetime_to_utc_timestamp(when)))
            written.append(job.id)
        for job_id in removed:
            expected = seen.pop(job_id, None)
            if expected is None:
                try:
                    super().remove_job(job_id)
                except JobLookupError:
                    missing.add(job_id)
                continue
            args += ["r", job_id, expected, "", ""]
        if len(args) == 1:
            return missing
        keys = [self.jobs_key, self.run_times_key, self.fence_key]
        answer = self._write_back_script(keys=keys, args=args)
        if not isinstance(answer, list):
            self._answer(answer)  # refused by the fence
            return missing
        for job_id, result in zip(written, answer, strict=False):
            if int(result) == 0:
                logger.debug("job %s changed by another worker during a pass; kept", job_id)
        return missing

    def _token(self) -> str:
        return "" if self.fence_token is None else str(self.fence_token)

    def _answer(self, result: Any) -> int:
        """A script's answer; a refusal by the fence goes to ``on_fenced`` (or is raised)."""
        from .state import FencedError

        value = int(result)
        if value == -1:
            error = FencedError(self.fence_token or 0)
            if self.on_fenced is None:
                raise error
            self.on_fenced(error)
        return value
