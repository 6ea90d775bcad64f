"""The job views a manager keeps in step with its registry: the order jobs were added in
(``get_jobs``) and the list order of the admin API (``job_list``: by created_at, then id)."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from nexios_contrib_scheduler import IntervalTrigger, JobStatus, SchedulerManager
from nexios_contrib_scheduler.jobs import JobRecord
from nexios_contrib_scheduler.listing import JobListing, position
from nexios_contrib_scheduler.manager import JobTimes
from nexios_contrib_scheduler.testing import FrozenClock

START = datetime(2030, 1, 7, 8, 0, tzinfo=timezone.utc)


async def tick() -> None:
    pass


@pytest.fixture
def clock():
    with FrozenClock(START) as frozen:
        yield frozen


@pytest.fixture
def manager(clock) -> SchedulerManager:
    return SchedulerManager()


def add(manager: SchedulerManager, job_id: str, **options):
    return manager.add_job(tick, IntervalTrigger(hours=1), id=job_id, **options)


def listed(listing: JobListing, after=None, count: int = 10_000) -> list[str]:
    return [job.id for _, job in listing.following(after, count).jobs]


def record(job_id: str, created_at: datetime) -> JobRecord:
    return JobRecord(
        id=job_id,
        name=job_id,
        func=tick,
        trigger=IntervalTrigger(hours=1),
        args=(),
        kwargs={},
        max_instances=1,
        misfire_grace_time=None,
        coalesce=True,
        created_at=created_at,
        history_size=0,
    )


class TestGetJobs:
    def test_jobs_in_the_order_added_and_by_status(self, manager, clock):
        for n, job_id in enumerate(["c", "a", "b"]):
            clock.set(START - timedelta(seconds=n))  # created in the reverse order
            add(manager, job_id)
        manager.pause_job("a")
        assert [job.id for job in manager.get_jobs()] == ["c", "a", "b"]
        assert [job.id for job in manager.get_jobs("paused")] == ["a"]
        assert [job.id for job in manager.get_jobs(JobStatus.ACTIVE)] == ["c", "b"]

    def test_each_call_returns_a_new_list_of_the_same_views(self, manager):
        job = add(manager, "a")
        first = manager.get_jobs()
        first.append(first[0])
        first.clear()
        second = manager.get_jobs()
        assert second == [job] and second is not first
        assert second[0] is job is manager.get_job("a")

    def test_a_removed_job_leaves_and_its_handle_shows_cancelled(self, manager):
        handle = add(manager, "a")
        add(manager, "b")
        manager.remove_job("a")
        assert [job.id for job in manager.get_jobs()] == ["b"]
        assert manager.get_job("a") is None
        assert handle.status is JobStatus.CANCELLED

    def test_a_replaced_job_keeps_its_place_with_a_new_view(self, manager):
        old = add(manager, "a")
        add(manager, "b")
        new = add(manager, "a", replace_existing=True)
        assert [job.id for job in manager.get_jobs()] == ["a", "b"]
        assert manager.get_jobs()[0] is new is manager.get_job("a")
        assert old != new and old.status is JobStatus.CANCELLED

    def test_an_add_that_fails_leaves_the_lists_as_they_were(self, manager, monkeypatch):
        first = add(manager, "a")
        add(manager, "b")

        def refuse(*args, **kwargs):
            raise RuntimeError("cannot schedule")

        monkeypatch.setattr(manager, "_schedule", refuse)
        for job_id in ["c", "a"]:  # a new job, and one replacing a job
            with pytest.raises(RuntimeError):
                add(manager, job_id, replace_existing=True)
        assert manager.get_jobs() == [first, manager.get_job("b")]
        assert listed(manager.job_list()) == ["a", "b"]


class TestListOrder:
    def test_oldest_first_then_by_id(self, manager, clock):
        clock.set(START + timedelta(seconds=5))
        add(manager, "late")
        clock.set(START)
        for job_id in ["m", "b", "z"]:
            add(manager, job_id)
        assert listed(manager.job_list()) == ["b", "m", "z", "late"]

    def test_a_page_after_a_position_with_where_it_stands(self, manager, clock):
        for n in range(10):
            clock.set(START + timedelta(seconds=n))
            add(manager, f"job-{n}")
        listing = manager.job_list()
        first = listing.following(None, 3)
        assert (first.total, first.before) == (10, 0)
        assert [job.id for _, job in first.jobs] == ["job-0", "job-1", "job-2"]
        cursor = first.jobs[-1][0]
        assert cursor == (START + timedelta(seconds=2), "job-2")
        second = listing.following(cursor, 3)
        assert (second.total, second.before) == (10, 3)
        assert [job.id for _, job in second.jobs] == ["job-3", "job-4", "job-5"]
        assert listing.following(second.jobs[-1][0], 100).jobs[-1][1].id == "job-9"

    def test_a_position_stays_put_while_jobs_come_and_go(self, manager, clock):
        for n in range(10):
            clock.set(START + timedelta(seconds=n))
            add(manager, f"job-{n}")
        listing = manager.job_list()
        cursor = listing.following(None, 5).jobs[-1][0]  # after job-4
        manager.remove_job("job-4")  # the cursor's own job
        manager.remove_job("job-1")  # one before it
        manager.remove_job("job-8")  # one after it
        clock.set(START - timedelta(seconds=1))
        add(manager, "early")  # before the cursor: not listed after it
        clock.set(START + timedelta(seconds=20))
        add(manager, "new")  # listed at the end
        after = listing.following(cursor, 100)
        assert [job.id for _, job in after.jobs] == ["job-5", "job-6", "job-7", "job-9", "new"]
        assert (after.total, after.before) == (9, 4)  # early, job-0, job-2, job-3

    def test_replace_existing_moves_the_job_to_the_end(self, manager, clock):
        for n in range(3):
            clock.set(START + timedelta(seconds=n))
            add(manager, f"job-{n}")
        clock.set(START + timedelta(seconds=10))
        new = add(manager, "job-0", replace_existing=True)
        listing = manager.job_list()
        assert listed(listing) == ["job-1", "job-2", "job-0"]
        assert listing.following(None, 10).jobs[-1][1] is new
        positions, jobs = listing.ordered()
        assert [job.id for job in jobs] == ["job-1", "job-2", "job-0"]
        assert positions == [position(manager.registry.get(job.id)) for job in jobs]

    def test_ordered_is_a_snapshot(self, manager):
        add(manager, "a")
        positions, jobs = manager.job_list().ordered()
        add(manager, "b")
        manager.remove_job("a")
        assert [job.id for job in jobs] == ["a"] and len(positions) == 1
        assert [job.id for job in manager.job_list().ordered()[1]] == ["b"]


class TestFollowsTheRegistry:
    """Records put in or taken out quietly (as a reload from a store does) are followed."""

    def test_a_record_put_again_with_another_created_at_moves(self, manager):
        registry = manager.registry
        for n in range(3):
            registry.put(record(f"job-{n}", START + timedelta(seconds=n)))
        moved = registry.get("job-0")
        view = manager.get_job("job-0")
        moved.created_at = START + timedelta(seconds=10)
        registry.put(moved)
        assert listed(manager.job_list()) == ["job-1", "job-2", "job-0"]
        assert manager.get_job("job-0") is view  # the same record keeps its view
        assert [job.id for job in manager.get_jobs()] == ["job-0", "job-1", "job-2"]

    def test_a_created_at_without_a_zone_is_taken_as_utc(self, manager):
        manager.registry.put(record("naive", START.replace(tzinfo=None)))
        manager.registry.put(record("aware", START + timedelta(seconds=1)))
        assert listed(manager.job_list()) == ["naive", "aware"]

    def test_many_random_puts_and_pops_keep_both_orders(self, manager):
        """Enough records to fill, split and merge many blocks of the ordered index."""
        rng = random.Random(7)
        registry = manager.registry
        listing = manager.job_list()
        expected: dict[str, datetime] = {}
        for step in range(12_000):
            job_id = f"job-{rng.randrange(4000)}"
            if job_id in expected and rng.random() < 0.45:
                registry.pop(job_id)
                del expected[job_id]
            else:
                when = START + timedelta(seconds=rng.randrange(500))
                registry.put(record(job_id, when))
                expected[job_id] = when
            if step % 1000 == 0 or step == 11_999:
                order = sorted(expected, key=lambda i: (expected[i], i))
                assert listed(listing) == order
                assert [job.id for job in manager.get_jobs()] == registry.ids()
                assert len(listing) == len(expected)
                probe = (START + timedelta(seconds=250), "job-2")
                cut = sum(1 for i in order if (expected[i], i) <= probe)
                following = listing.following(probe, 25)
                assert following.before == cut and following.total == len(order)
                assert [job.id for _, job in following.jobs] == order[cut : cut + 25]
        # Then almost all go, oldest first: the blocks empty and merge.
        for job_id in sorted(expected, key=lambda i: (expected[i], i))[:-3]:
            registry.pop(job_id)
            del expected[job_id]
        assert listed(listing) == sorted(expected, key=lambda i: (expected[i], i))

    def test_a_listing_made_on_a_registry_that_holds_records_lists_them(self, manager):
        add(manager, "a")
        listing = JobListing(manager.registry, JobTimes(manager))
        assert listed(listing) == ["a"]
        assert [job.id for job in listing.jobs()] == ["a"]
