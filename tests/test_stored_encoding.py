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
        with pytest.raises(AttributeError):
            runs[0].outcome = "success"  # type: ignore[misc]  # still frozen


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
