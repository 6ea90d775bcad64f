from __future__ import annotations

import pickle
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nexios_contrib_scheduler import CronTrigger, DateTimeTrigger, IntervalTrigger
from nexios_contrib_scheduler.triggers import IntervalSchedule

UTC = timezone.utc
RIGA = ZoneInfo("Europe/Riga")
NY = ZoneInfo("America/New_York")
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


class TestIntervalTrigger:
    @pytest.mark.parametrize(
        ("kwargs", "seconds"),
        [
            ({"seconds": 30}, 30),
            ({"minutes": 5}, 300),
            ({"hours": 2}, 7200),
            ({"days": 1}, 86400),
            ({"weeks": 1}, 604800),
            ({"hours": 1, "minutes": 15}, 4500),
            ({"seconds": 0.25}, 0.25),
            ({"minutes": 1.5}, 90),
        ],
    )
    def test_interval(self, kwargs, seconds):
        assert IntervalTrigger(**kwargs).interval == timedelta(seconds=seconds)

    def test_start_now_fires_at_start_then_every_interval(self):
        assert IntervalTrigger(seconds=30).next_fire_times(3, T0) == [
            T0,
            T0 + timedelta(seconds=30),
            T0 + timedelta(seconds=60),
        ]

    def test_without_start_now_the_first_fire_is_one_interval_later(self):
        assert IntervalTrigger(minutes=5, start_now=False).next_fire_times(2, T0) == [
            T0 + timedelta(minutes=5),
            T0 + timedelta(minutes=10),
        ]

    @pytest.mark.parametrize(
        "kwargs",
        [{}, {"seconds": 0}, {"seconds": 0, "minutes": 0, "hours": 0, "days": 0, "weeks": 0}],
    )
    def test_zero_total_is_refused(self, kwargs):
        with pytest.raises(ValueError, match="positive interval"):
            IntervalTrigger(**kwargs)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            (
                {"seconds": -1},
                ValueError,
                "seconds must be a finite number of zero or more, got -1",
            ),
            ({"minutes": -0.5, "hours": 1}, ValueError, "minutes"),
            ({"hours": float("inf")}, ValueError, "hours"),
            ({"seconds": float("nan")}, ValueError, "seconds"),
            ({"seconds": "30"}, TypeError, "seconds must be a number, not '30'"),
            ({"days": True}, TypeError, "days must be a number"),
            ({"seconds": 1, "start_now": "yes"}, TypeError, "start_now"),
        ],
    )
    def test_bad_values(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            IntervalTrigger(**kwargs)

    def test_intervals_are_real_time_across_dst(self):
        # 2026-03-29 03:00 Riga jumps to 04:00: an hourly job still fires every 60 real minutes.
        start = datetime(2026, 3, 29, 0, 30, tzinfo=UTC)
        schedule = IntervalTrigger(hours=1).to_apscheduler(RIGA, start)
        fires = schedule.fire_times(4, start)
        assert [b - a for a, b in zip(fires, fires[1:])] == [timedelta(hours=1)] * 3
        # Compared as wall-clock values in Riga, the jump shows as a two-hour gap.
        assert [f.astimezone(RIGA).hour for f in fires] == [2, 4, 5, 6]

    def test_schedules_work_in_utc(self):
        fire = IntervalTrigger(seconds=1).to_apscheduler(NY, T0).first_fire_time(T0)
        assert fire.tzinfo is UTC and fire == T0
        cron = CronTrigger("0 9 * * *", timezone="America/New_York")
        assert cron.to_apscheduler(RIGA, T0).first_fire_time(T0).tzinfo is UTC
        assert cron.next_fire_times(1, T0)[0].tzinfo is NY

    def test_resumed_schedule_continues_on_its_grid(self):
        schedule = IntervalTrigger(seconds=10).to_apscheduler(UTC, T0)
        later = T0 + timedelta(seconds=35)
        assert schedule.get_next_fire_time(None, later) == T0 + timedelta(seconds=40)
        assert schedule.get_next_fire_time(None, T0 + timedelta(seconds=40)) == T0 + timedelta(
            seconds=40
        )

    def test_describe_and_to_dict(self):
        assert IntervalTrigger(seconds=30).describe() == "Every 30 seconds"
        assert IntervalTrigger(hours=1, minutes=15).describe() == "Every 1 hour 15 minutes"
        assert IntervalTrigger(days=1).describe() == "Every 1 day"
        assert IntervalTrigger(seconds=0.5).describe() == "Every 0.5 seconds"
        assert IntervalTrigger(minutes=5, start_now=False).to_dict() == {
            "type": "interval",
            "minutes": 5,
            "start_now": False,
        }

    def test_equality(self):
        assert IntervalTrigger(seconds=30) == IntervalTrigger(seconds=30)
        assert IntervalTrigger(seconds=30) != IntervalTrigger(seconds=30, start_now=False)
        assert IntervalTrigger(seconds=30) != CronTrigger("* * * * *")
        assert len({IntervalTrigger(seconds=30), IntervalTrigger(seconds=30)}) == 1


class TestCronTrigger:
    def test_standalone_uses_utc(self):
        assert CronTrigger("0 9 * * *").next_fire_times(1, T0) == [
            datetime(2026, 3, 2, 9, tzinfo=UTC)
        ]

    def test_uses_the_scheduler_zone_unless_given_one(self):
        schedule = CronTrigger("0 9 * * *").to_apscheduler(NY, T0)
        assert schedule.first_fire_time(T0) == datetime(2026, 3, 1, 9, tzinfo=NY)
        own = CronTrigger("0 9 * * *", timezone="Europe/Riga").to_apscheduler(NY, T0)
        assert own.first_fire_time(T0) == datetime(2026, 3, 2, 9, tzinfo=RIGA)

    def test_a_job_scheduled_on_a_fire_time_fires_then(self):
        on_the_hour = datetime(2026, 3, 1, 13, 0, tzinfo=UTC)
        assert CronTrigger("0 * * * *").next_fire_times(1, on_the_hour) == [on_the_hour]

    def test_weekdays_are_crontab_numbered(self):
        # 2026-03-01 is a Sunday: crontab 0 (APScheduler's from_crontab would say Monday).
        assert CronTrigger("0 12 * * 0").next_fire_times(1, T0 - timedelta(hours=1)) == [T0]
        assert CronTrigger("0 12 * * 7").next_fire_times(1, T0 - timedelta(hours=1)) == [T0]

    def test_day_rule_is_or_when_both_restricted(self):
        fires = CronTrigger("0 0 13 * 5").next_fire_times(3, T0)
        # Fridays and the 13th, not only Friday-the-13th.
        assert [f.day for f in fires] == [6, 13, 20]

    def test_errors_name_field_value_and_range(self):
        with pytest.raises(
            ValueError, match=r"minute value 61 out of range 0-59 in '61 \* \* \* \*'"
        ):
            CronTrigger("61 * * * *")

    def test_unknown_zone(self):
        with pytest.raises(ValueError, match="unknown timezone"):
            CronTrigger("* * * * *", timezone="Nowhere/Town")

    def test_describe_and_to_dict(self):
        trigger = CronTrigger("0 9 * * 1-5", timezone="Europe/Riga")
        assert trigger.describe() == "At 09:00, Monday through Friday"
        assert trigger.to_dict() == {
            "type": "cron",
            "expr": "0 9 * * 1-5",
            "timezone": "Europe/Riga",
        }
        assert CronTrigger("@daily").to_dict()["timezone"] is None

    def test_schedule_pickles(self):
        schedule = CronTrigger("*/15 9-17 * * mon-fri").to_apscheduler(RIGA, T0)
        again = pickle.loads(pickle.dumps(schedule))
        monday_nine = datetime(2026, 3, 2, 9, 0, tzinfo=RIGA)  # T0 is a Sunday
        expected = [monday_nine + timedelta(minutes=15 * k) for k in range(5)]
        assert again.fire_times(5, T0) == expected


class TestDateTimeTrigger:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("2026-12-25T10:30:00", datetime(2026, 12, 25, 10, 30, tzinfo=UTC)),
            ("2026-12-25T10:30:00+00:00", datetime(2026, 12, 25, 10, 30, tzinfo=UTC)),
            ("2026-12-25T10:30:00+02:00", datetime(2026, 12, 25, 8, 30, tzinfo=UTC)),
            ("2026-12-25T10:30:00Z", datetime(2026, 12, 25, 10, 30, tzinfo=UTC)),
            ("2026-12-25 10:30:00", datetime(2026, 12, 25, 10, 30, tzinfo=UTC)),
            ("2026-12-25", datetime(2026, 12, 25, tzinfo=UTC)),
        ],
    )
    def test_the_spec_formats(self, text, expected):
        assert DateTimeTrigger(text).next_fire_times(5, T0) == [expected]

    def test_naive_values_are_in_the_scheduler_zone(self):
        schedule = DateTimeTrigger("2026-12-25T10:30:00").to_apscheduler(RIGA, T0)
        assert schedule.first_fire_time(T0) == datetime(2026, 12, 25, 10, 30, tzinfo=RIGA)

    def test_own_zone_wins(self):
        trigger = DateTimeTrigger("2026-12-25 10:30", timezone="America/New_York")
        assert trigger.to_apscheduler(RIGA, T0).first_fire_time(T0) == datetime(
            2026, 12, 25, 10, 30, tzinfo=NY
        )

    def test_aware_datetime(self):
        when = datetime(2026, 7, 1, 8, tzinfo=NY)
        assert DateTimeTrigger(when).to_apscheduler(RIGA, T0).first_fire_time(T0) == when

    def test_fires_once(self):
        schedule = DateTimeTrigger("2026-12-25").to_apscheduler(UTC, T0)
        first = schedule.first_fire_time(T0)
        assert schedule.get_next_fire_time(first, first) is None

    def test_past_date_has_no_future_fire(self):
        assert DateTimeTrigger("2020-01-01").next_fire_times(1, T0) == []

    @pytest.mark.parametrize("bad", ["tomorrow", "2026-13-01", "25/12/2026", ""])
    def test_bad_strings_are_quoted(self, bad):
        with pytest.raises(ValueError, match=f"cannot read run_date {bad!r}"):
            DateTimeTrigger(bad)

    def test_bad_type(self):
        with pytest.raises(TypeError, match="run_date must be a datetime or an ISO 8601 str"):
            DateTimeTrigger(1767225600)

    def test_describe_and_to_dict(self):
        trigger = DateTimeTrigger("2026-12-25T10:30:00")
        assert trigger.describe() == "Once at 2026-12-25 10:30:00 scheduler time"
        assert trigger.to_dict() == {
            "type": "date",
            "run_date": "2026-12-25T10:30:00",
            "timezone": None,
        }


class TestNextFireTimes:
    def test_needs_an_aware_start(self):
        with pytest.raises(ValueError, match="timezone-aware"):
            IntervalTrigger(seconds=1).next_fire_times(1, datetime(2026, 1, 1))

    def test_count_checks(self):
        with pytest.raises(ValueError):
            CronTrigger("* * * * *").next_fire_times(-1, T0)
        with pytest.raises(TypeError):
            CronTrigger("* * * * *").next_fire_times("3", T0)
        assert CronTrigger("* * * * *").next_fire_times(0, T0) == []

    def test_default_start_is_now(self):
        before = datetime.now(UTC)
        [fire] = IntervalTrigger(seconds=10, start_now=False).next_fire_times(1)
        assert before + timedelta(seconds=10) <= fire <= datetime.now(UTC) + timedelta(seconds=10)


def test_interval_schedule_pickles():
    schedule = IntervalTrigger(seconds=90).to_apscheduler(RIGA, T0)
    assert isinstance(schedule, IntervalSchedule)
    again = pickle.loads(pickle.dumps(schedule))
    assert again.fire_times(3, T0) == [T0 + timedelta(seconds=90 * k) for k in range(3)]
