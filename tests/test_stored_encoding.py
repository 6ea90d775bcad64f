"""How job records are encoded for the stores: the short cuts taken for speed (shared
pickles of common values, UTC datetimes written around their state, runs pickled as
constructor calls) give exactly what ``pickle`` gives, and what was stored before them
still reads back."""

from __future__ import annotations

import pickle
import random
from collections import deque
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nexios_contrib_scheduler import IntervalTrigger, JobStatus
from nexios_contrib_scheduler.jobs import JobRecord, RunRecord
from nexios_contrib_scheduler.stores import records

UTC = timezone.utc
T0 = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)

#: ``[RunRecord(...)]`` as stored by earlier releases, which pickled a run as the state
#: of a slotted dataclass.
STORED_BEFORE = (
    b"\x80\x05\x95\xc1\x00\x00\x00\x00\x00\x00\x00]\x94\x8c\x1dnexios_contrib_scheduler.jobs"
    b"\x94\x8c\tRunRecord\x94\x93\x94)\x81\x94]\x94(\x8c\x08datetime\x94\x8c\x08datetime"
    b"\x94\x93\x94C\n\x07\xea\x01\x02\x03\x04\x05\x00\x00\x00\x94h\x06\x8c\x08timezone\x94"
    b"\x93\x94h\x06\x8c\ttimedelta\x94\x93\x94K\x00K\x00K\x00\x87\x94R\x94\x85\x94R\x94"
    b"\x86\x94R\x94h\x08C\n\x07\xea\x01\x02\x03\x04\x06\x00\x00\x00\x94h\x11\x86\x94R\x94N"
    b"\x8c\x05error\x94\x8c\x10ValueError: boom\x94eba."
)


def tick() -> None:
    pass


def make_record(**fields: object) -> JobRecord:
    values: dict[str, object] = dict(
        id="job-1",
        name="tick",
        func=tick,
        trigger=IntervalTrigger(minutes=5),
        args=(1, "two", [3]),
        kwargs={"k": {"nested": True}},
        max_instances=2,
        misfire_grace_time=30.0,
        coalesce=False,
        created_at=T0,
        history_size=5,
    )
    values.update(fields)
    return JobRecord(**values)  # type: ignore[arg-type]


def plain(record: JobRecord) -> dict[str, bytes]:
    """The record's fields as ``pickle`` writes them, with no short cut."""
    out = {}
    for name in records.persisted_fields():
        value = getattr(record, name)
        if name == "func":
            value = records.func_ref(value)
        elif isinstance(value, deque):
            value = list(value)
        out[name] = pickle.dumps(value, records.PROTOCOL)
    return out


class TestEncode:
    def test_a_new_record_is_encoded_byte_for_byte_as_pickle_would(self):
        record = make_record()
        assert records.encode(record) == plain(record)
        assert records.encode(record) == plain(record)  # again, from the shared pickles

    def test_a_record_that_ran_is_encoded_byte_for_byte_as_pickle_would(self):
        berlin = ZoneInfo("Europe/Berlin")
        record = make_record(
            status=JobStatus.FAILED,
            paused_reason="paused by hand",
            last_run_time=T0 + timedelta(microseconds=999_999),
            last_outcome="error",
            last_error="ValueError: boom",
            total_run_count=3,
            success_count=2,
            failure_count=1,
            consecutive_failures=1,
            last_duration=0.25,
            created_at=datetime(2026, 10, 25, 2, 30, fold=1, tzinfo=berlin),  # not UTC
        )
        record.record(RunRecord(T0, T0, T0 + timedelta(seconds=1), "success"))
        record.record(RunRecord(T0, T0, None, "error", "ValueError: boom"))
        record.record(RunRecord(T0, None, None, "missed"))
        assert records.encode(record) == plain(record)
        assert records.decode(records.encode(record), record.id)["history"] == list(record.history)

    def test_only_the_named_fields_are_encoded(self):
        record = make_record(total_run_count=7)
        assert records.encode(record, ("total_run_count", "status")) == {
            "total_run_count": pickle.dumps(7, records.PROTOCOL),
            "status": pickle.dumps(JobStatus.ACTIVE, records.PROTOCOL),
        }

    def test_equal_values_of_different_types_keep_their_own_type(self):
        # 1 == True == 1.0 and JobStatus.ACTIVE == "active": none may take another's pickle
        a = records.encode(make_record(total_run_count=1, coalesce=True, paused_reason="active"))
        values = records.decode(a, "job-1")
        assert type(values["total_run_count"]) is int
        assert type(values["coalesce"]) is bool
        assert type(values["paused_reason"]) is str
        assert type(values["status"]) is JobStatus

    def test_a_field_that_cannot_be_pickled_is_left_out_and_logged(self, caplog):
        record = make_record(kwargs={"lock": pytest})  # a module cannot be pickled
        fields = records.encode(record)
        assert "kwargs" not in fields and "args" in fields
        assert "field 'kwargs' cannot be stored" in caplog.text


class TestUtcDatetimes:
    def test_any_utc_datetime_is_written_as_pickle_writes_it(self):
        rng = random.Random(11)
        edges = [datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC)]
        span = int((datetime.max - datetime.min).total_seconds())
        sample = [
            datetime.min.replace(tzinfo=UTC)
            + timedelta(seconds=rng.randrange(span), microseconds=rng.randrange(10**6))
            for _ in range(5_000)
        ]
        for moment in [*edges, *sample]:
            for fold in (0, 1):
                value = moment.replace(fold=fold)
                assert records.encode(make_record(last_run_time=value))[
                    "last_run_time"
                ] == pickle.dumps(value, records.PROTOCOL), value

    def test_other_time_zones_and_naive_datetimes_are_pickled_as_they_are(self):
        for value in (
            datetime(2026, 3, 29, 2, 30, tzinfo=ZoneInfo("Europe/Berlin")),
            datetime(2026, 3, 29, 2, 30, tzinfo=timezone(timedelta(hours=5, minutes=30))),
            datetime(2026, 3, 29, 2, 30),
        ):
            stored = records.encode(make_record(last_run_time=value))["last_run_time"]
            assert stored == pickle.dumps(value, records.PROTOCOL)
            back = pickle.loads(stored)
            assert back == value and back.tzinfo == value.tzinfo


class TestRunRecords:
    def test_a_run_round_trips(self):
        run = RunRecord(T0, T0, T0 + timedelta(seconds=2), "timeout", "timed out after 2 s")
        assert pickle.loads(pickle.dumps(run, records.PROTOCOL)) == run

    def test_runs_stored_by_earlier_releases_still_read_back(self):
        runs = pickle.loads(STORED_BEFORE)
        assert runs == [
            RunRecord(
                datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
                datetime(2026, 1, 2, 3, 4, 6, tzinfo=UTC),
                None,
                "error",
                "ValueError: boom",
            )
        ]
        assert runs[0].worker is None  # a field added since: its default
        with pytest.raises(AttributeError):
            runs[0].outcome = "success"  # type: ignore[misc]  # still frozen

    def test_a_remote_run_keeps_its_worker(self):
        when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
        run = RunRecord(when, when, when, "success", None, "arq (arq:queue)")
        assert pickle.loads(pickle.dumps(run)) == run
        local = RunRecord(when, when, when, "success")
        assert len(pickle.dumps(local)) < len(pickle.dumps(run))  # no room for a worker


class TestStorableFunctions:
    def test_the_verdict_on_a_function_holds_for_later_jobs_and_refusals_stay(self):
        records.check_storable(tick, (), {}, "sqlite")
        records.check_storable(tick, (1,), {"a": 2}, "sqlite")  # from the kept verdict
        with pytest.raises(ValueError, match="cannot be stored"):
            records.check_storable(tick, (lambda: 1,), {}, "sqlite")  # arguments: each time
        for _ in range(2):
            with pytest.raises(ValueError, match="a lambda"):
                records.check_storable(lambda: None, (), {}, "sqlite")

    def test_a_function_renamed_since_its_verdict_is_checked_again(self):
        def local() -> None:
            pass

        with pytest.raises(ValueError, match="inside another function"):
            records.check_storable(local, (), {}, "sqlite")
        local.__qualname__ = "tick"
        local.__module__ = __name__
        with pytest.raises(ValueError, match="not what"):
            records.check_storable(local, (), {}, "sqlite")


# --- schedules and triggers: pickled as one call with their values packed --------------

#: An ``IntervalSchedule`` and an ``IntervalTrigger`` as stored by earlier releases, which
#: pickled them as objects with their ``__dict__``.
SCHEDULE_STORED_BEFORE = (
    b"\x80\x05\x95V\x01\x00\x00\x00\x00\x00\x00\x8c!nexios_contrib_scheduler.triggers\x94"
    b"\x8c\x10IntervalSchedule\x94\x93\x94)\x81\x94}\x94(\x8c\x08interval\x94\x8c\x08datetime"
    b"\x94\x8c\ttimedelta\x94\x93\x94K\x00KZK\x00\x87\x94R\x94\x8c\x06anchor\x94h\x06\x8c\x08"
    b"datetime\x94\x93\x94C\n\x07\xea\x03\x1d\x00\x1e\x00\x00\x00\x00\x94h\x06\x8c\x08timezone"
    b"\x94\x93\x94h\x08K\x00K\x00K\x00\x87\x94R\x94\x85\x94R\x94\x86\x94R\x94\x8c\tstart_now"
    b"\x94\x89\x8c\x08timezone\x94\x8c\x08builtins\x94\x8c\x07getattr\x94\x93\x94\x8c\x08"
    b"zoneinfo\x94\x8c\x08ZoneInfo\x94\x93\x94\x8c\t_unpickle\x94\x86\x94R\x94\x8c\x0c"
    b"Europe/Paris\x94K\x01\x86\x94R\x94\x8c\x06jitter\x94G@\x04\x00\x00\x00\x00\x00\x00\x8c"
    b"\x08end_date\x94h\rC\n\x07\xea\x04\x01\x00\x1e\x00\x00\x00\x00\x94h\x14\x86\x94R\x94ub."
)
TRIGGER_STORED_BEFORE = (
    b"\x80\x05\x95\x1b\x01\x00\x00\x00\x00\x00\x00\x8c!nexios_contrib_scheduler.triggers\x94"
    b"\x8c\x0fIntervalTrigger\x94\x93\x94)\x81\x94}\x94(\x8c\x05weeks\x94K\x00\x8c\x04days"
    b"\x94K\x00\x8c\x05hours\x94K\x00\x8c\x07minutes\x94G?\xf8\x00\x00\x00\x00\x00\x00\x8c\x07"
    b"seconds\x94K\x00\x8c\tstart_now\x94\x89\x8c\x08interval\x94\x8c\x08datetime\x94\x8c\t"
    b"timedelta\x94\x93\x94K\x00KZK\x00\x87\x94R\x94\x8c\x06jitter\x94N\x8c\nstart_date\x94h"
    b"\x0c\x8c\x08datetime\x94\x93\x94C\n\x07\xea\x04\x01\x08\x00\x00\x00\x00\x00\x94h\x0c\x8c"
    b"\x08timezone\x94\x93\x94h\x0eK\x00M \x1cK\x00\x87\x94R\x94\x85\x94R\x94\x86\x94R\x94\x8c"
    b"\x08end_date\x94Nub."
)


def _schedules_and_triggers() -> list[object]:
    from nexios_contrib_scheduler import CronTrigger, DateTimeTrigger

    made: list[object] = []
    triggers = [
        IntervalTrigger(seconds=37, start_now=False),
        IntervalTrigger(minutes=1.5, start_date="2026-04-01T08:00:00+02:00", jitter=3),
        IntervalTrigger(hours=2, end_date=T0 + timedelta(days=400)),
        CronTrigger("*/5 * * * *", timezone="Europe/Paris", end_date="2031-01-01T00:00:00Z"),
        CronTrigger("0 9 * * 1-5", jitter=10, start_date=T0),
        DateTimeTrigger("2030-05-05T10:00:00", timezone="America/New_York"),
    ]
    zones = [UTC, ZoneInfo("Europe/Berlin"), timezone(timedelta(hours=5, minutes=30))]
    for trigger in triggers:
        made.append(trigger)
        for zone in zones:
            made.append(trigger.to_apscheduler(zone, T0))
    return made


@pytest.mark.parametrize("obj", _schedules_and_triggers(), ids=repr)
def test_schedules_and_triggers_pickle_back_to_what_they_were(obj: object) -> None:
    back = pickle.loads(pickle.dumps(obj, records.PROTOCOL))
    assert type(back) is type(obj)
    assert back.__dict__ == obj.__dict__
    for name, value in obj.__dict__.items():
        restored = back.__dict__[name]
        assert type(restored) is type(value), name
        if isinstance(value, datetime):  # the same zone, not only the same instant
            assert restored.utcoffset() == value.utcoffset()
            assert restored.tzinfo == value.tzinfo or restored.tzinfo is value.tzinfo, name
    schedule = getattr(obj, "fire_times", None)
    if schedule is not None:
        assert back.fire_times(5, T0) == obj.fire_times(5, T0)  # type: ignore[attr-defined]


def test_schedules_pickle_as_one_call_without_the_classes_of_their_values() -> None:
    schedule = IntervalTrigger(seconds=37, start_now=False).to_apscheduler(UTC, T0)
    pickled = pickle.dumps(schedule, records.PROTOCOL)
    assert b"timedelta" not in pickled and b"datetime" not in pickled
    assert b"IntervalSchedule" not in pickled  # one function, named once
    assert len(pickled) < 120


def test_schedules_and_triggers_stored_before_still_load() -> None:
    schedule = pickle.loads(SCHEDULE_STORED_BEFORE)
    assert schedule.interval == timedelta(seconds=90)
    assert schedule.anchor == T0 and schedule.timezone == ZoneInfo("Europe/Paris")
    assert schedule.jitter == 2.5 and schedule.end_date == T0 + timedelta(days=3)
    assert schedule.next_base(None, T0) == T0 + timedelta(seconds=90)
    again = pickle.loads(pickle.dumps(schedule, records.PROTOCOL))
    assert again.__dict__ == schedule.__dict__
    trigger = pickle.loads(TRIGGER_STORED_BEFORE)
    assert trigger == IntervalTrigger(
        minutes=1.5, start_now=False, start_date="2026-04-01T08:00:00+02:00"
    )
    assert pickle.loads(pickle.dumps(trigger, records.PROTOCOL)) == trigger


def test_a_utc_time_stored_compactly_loads_as_the_same_datetime() -> None:
    from nexios_contrib_scheduler.triggers import compact_time

    for when in (T0, datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, tzinfo=UTC)):
        back = pickle.loads(pickle.dumps(compact_time(when), records.PROTOCOL))
        assert type(back) is datetime and back == when and back.tzinfo is UTC
    paris = T0.astimezone(ZoneInfo("Europe/Paris"))
    assert compact_time(paris) is paris  # other zones are pickled as they are
    assert compact_time(None) is None


def test_next_run_time_columns_are_what_apscheduler_writes_to_the_last_bit() -> None:
    from apscheduler.util import datetime_to_utc_timestamp

    from nexios_contrib_scheduler.stores.mirror import utc_timestamp

    rng = random.Random(11)
    zones = [
        UTC,
        ZoneInfo("Europe/Paris"),
        ZoneInfo("America/New_York"),
        timezone(-timedelta(hours=3, minutes=30)),
    ]
    first = datetime(1, 1, 2, tzinfo=UTC)
    for _ in range(20_000):
        when = first + timedelta(microseconds=rng.randrange(315_000_000_000_000_000))
        if 2 < when.year < 9998:
            when = when.astimezone(rng.choice(zones))
        assert utc_timestamp(when) == datetime_to_utc_timestamp(when), when
    naive = datetime(2026, 3, 29, 1, 30, 0, 5)
    assert utc_timestamp(naive) == datetime_to_utc_timestamp(naive)
