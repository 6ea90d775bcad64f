"""APScheduler's Redis job store, as the writer and the reloads use it.

The same as ``sqlalchemy_store.py``: the schedules, in APScheduler's format, written by the
writer's thread and read by the sync thread, never on the event loop. A pass's moves are
conditional on each job's stored bytes being those the worker last read or wrote (done
here by a Lua script, atomically), and carry the leader's fencing token, checked in the
same script.

Imported only for a ``redis:`` job store: it needs redis-py (the ``redis`` extra), and
nothing of SQLAlchemy.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import Any

from apscheduler.jobstores.redis import RedisJobStore

from .records import load_keeping_unimportable

#: Most jobs one command of a batch writes (HSET, ZADD, ZREM with many at once).
PAGE = 1000

logger = logging.getLogger("nexios_contrib_scheduler")


# A pass's moves: each job replaced (or deleted) only if its stored state is the one
# expected, the fence checked once.
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
    """``RedisJobStore`` with batched writes and guarded, fenced moves."""

    def __init__(self, jobs_key: str, run_times_key: str, **connect_args: Any) -> None:
        super().__init__(jobs_key=jobs_key, run_times_key=run_times_key, **connect_args)
        #: The fence key (the state backend sets its own).
        self.fence_key = jobs_key + ":fence"
        self._write_back_script = self.redis.register_script(_WRITE_BACK)

    def _reconstitute_job(self, job_state: bytes) -> Any:
        # A job whose function this worker cannot import is kept, not deleted.
        return load_keeping_unimportable(job_state, super()._reconstitute_job)

    def restore(self, job_state: bytes) -> Any:
        """The APScheduler job stored as ``job_state`` (its function kept unresolved when
        this worker cannot import it)."""
        return self._reconstitute_job(job_state)

    def read_schedules(self, ids: Collection[str] | None) -> dict[str, bytes]:
        """The stored states of the given jobs (None: of every job), by id."""
        if ids is None:
            raw = self.redis.hgetall(self.jobs_key)
            return {_text(k): v for k, v in raw.items()}
        wanted = list(ids)
        found: dict[str, bytes] = {}
        for start in range(0, len(wanted), 1000):
            chunk = wanted[start : start + 1000]
            for job_id, state in zip(chunk, self.redis.hmget(self.jobs_key, chunk), strict=True):
                if state is not None:
                    found[job_id] = state
        return found

    def write_schedules(
        self,
        puts: Mapping[str, tuple[float | None, bytes]],
        deletes: Collection[str],
        into: Any = None,
    ) -> None:
        """Put (insert or replace) and delete schedules, in one transaction: ``into`` (a
        pipeline, executed by the caller) or one of its own."""
        if not puts and not deletes:
            return
        pipe = self.redis.pipeline(transaction=True) if into is None else into
        if deletes:
            pipe.hdel(self.jobs_key, *deletes)
            pipe.zrem(self.run_times_key, *deletes)
        # Many jobs to a command (a batch of adds writes thousands at once).
        items = list(puts.items())
        for first in range(0, len(items), PAGE):
            page = items[first : first + PAGE]
            pipe.hset(self.jobs_key, mapping={job_id: state for job_id, (_, state) in page})
            due = {job_id: when for job_id, (when, _) in page if when is not None}
            if due:
                pipe.zadd(self.run_times_key, due)
            paused = [job_id for job_id, (when, _) in page if when is None]
            if paused:
                pipe.zrem(self.run_times_key, *paused)
        if into is None:
            pipe.execute()

    def move_schedules(
        self,
        moves: Mapping[str, tuple[bytes | None, tuple[float | None, bytes] | None]],
        fence: int | None,
    ) -> int:
        """A pass's moves, in one fenced script call: each job's schedule replaced (or
        deleted: None) only if its stored state is the one expected. Returns how many were
        kept as another worker left them; raises FencedError when a newer leader wrote."""
        from .state import FencedError

        args: list[Any] = ["" if fence is None else str(fence)]
        for job_id, (expected, schedule) in moves.items():
            if schedule is None:
                args += ["r", job_id, expected or b"", "", ""]
            else:
                when, state = schedule
                args += ["u", job_id, expected or b"", state, "" if when is None else repr(when)]
        keys = [self.jobs_key, self.run_times_key, self.fence_key]
        answer = self._write_back_script(keys=keys, args=args)
        if not isinstance(answer, list):
            raise FencedError(fence or 0)
        kept = sum(1 for result in answer if int(result) == 0)
        if kept:
            logger.debug("%d job(s) changed by another worker during a pass; kept", kept)
        return kept


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
