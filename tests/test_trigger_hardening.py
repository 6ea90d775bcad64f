"""Triggers under hostile input: pytz zones, mixed bounds, tiny and huge intervals, the ends
of the calendar, and time zones that must survive ``to_dict()`` and ``trigger_from_dict``."""

from __future__ import annotations

import types
from datetime import datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import tzlocal

from nexios_contrib_scheduler import (
    CronTrigger,
    DateTimeTrigger,
    IntervalTrigger,
    JobStatus,
    SchedulerConfig,
    SchedulerManager,
    TriggerError,
)
from nexios_contrib_scheduler.triggers import IntervalSchedule, trigger_from_dict

try:
    import pytz as _pytz
except ImportError:  # pragma: no cover - the test extra installs it
    _pytz = None

UTC = timezone.utc
NY = ZoneInfo("America/New_York")
T0 = datetime(2030, 1, 7, 12, 0, tzinfo=UTC)  # a Monday, winter in New York


@pytest.fixture
def pytz() -> types.ModuleType:
    if _pytz is None:
        pytest.fail("pytz is not installed: these tests need it (pip install pytz)")
    return _pytz


async def noop() -> None:
    pass


# ---------------------------------------------------------------- pytz zones


class TestPytzZones:
    def test_cron_in_a_pytz_zone_fires_at_nine_new_york_on_successive_days(self, pytz):
        trigger = CronTrigger("0 9 * * *", timezone=pytz.timezone("America/New_York"))
        times = trigger.next_fire_times(3, T0)
        assert [t.astimezone(NY).isoformat() for t in times] == [
            "2030-01-07T09:00:00-05:00",
            "2030-01-08T09:00:00-05:00",
            "2030-01-09T09:00:00-05:00",
        ]

    def test_cron_in_a_pytz_zone_follows_daylight_saving_like_zoneinfo(self, pytz):
        start = datetime(2030, 3, 8, tzinfo=UTC)  # New York springs forward on 2030-03-10
        for expr in ("30 2 * * *", "0 * * * *", "0 9 * * mon-fri"):
            with_pytz = CronTrigger(expr, timezone=pytz.timezone("America/New_York"))
            with_zoneinfo = CronTrigger(expr, timezone="America/New_York")
            assert with_pytz.next_fire_times(60, start) == with_zoneinfo.next_fire_times(
                60, start
            ), expr

    @pytest.mark.parametrize(
        ("make_zone", "first"),
        [
            (lambda pytz: pytz.utc, "2030-01-08T09:00:00+00:00"),
            (lambda pytz: pytz.FixedOffset(330), "2030-01-08T03:30:00+00:00"),
            (lambda pytz: pytz.timezone("Asia/Kolkata"), "2030-01-08T03:30:00+00:00"),
            (lambda pytz: pytz.timezone("EST"), "2030-01-07T14:00:00+00:00"),
        ],
    )
    def test_pytz_utc_fixed_offsets_and_static_zones(self, pytz, make_zone, first):
        trigger = CronTrigger("0 9 * * *", timezone=make_zone(pytz))
        assert trigger.next_fire_times(1, T0)[0].astimezone(UTC).isoformat() == first

    async def test_a_naive_date_in_a_scheduler_with_a_pytz_zone_fires_at_the_wall_time(
        self, pytz, scheduler_clock
    ):
        scheduler_clock.set(T0)
        config = SchedulerConfig(timezone=pytz.timezone("America/New_York"))
        manager = SchedulerManager(config=config)
        ran: list[datetime] = []

        async def job() -> None:
            ran.append(scheduler_clock.now())

        launch = manager.add_job(job, DateTimeTrigger("2030-01-07T09:30:00"), id="launch")
        await manager.start()
        try:
            assert launch.next_run_time == datetime(2030, 1, 7, 9, 30, tzinfo=NY)
            await scheduler_clock.move_to("2030-01-07T14:29:00+00:00")
            assert ran == []  # the 56-minute local-mean-time shift would have run it already
            await scheduler_clock.advance(minutes=1)
            assert ran == [datetime(2030, 1, 7, 14, 30, tzinfo=UTC)]
            assert launch.status is JobStatus.COMPLETED
        finally:
            await manager.shutdown()

    def test_a_localized_pytz_date_keeps_its_instant(self, pytz):
        eastern = pytz.timezone("America/New_York")
        # 01:30 happens twice on 2030-11-03; localize() says which one.
        first = eastern.localize(datetime(2030, 11, 3, 1, 30), is_dst=True)
        second = eastern.localize(datetime(2030, 11, 3, 1, 30), is_dst=False)
        fires = [DateTimeTrigger(when).next_fire_times(1, T0)[0] for when in (first, second)]
        # (Compared in UTC: datetimes in a repeated hour never equal those of another zone.)
        assert [fire.astimezone(UTC) for fire in fires] == [
            datetime(2030, 11, 3, 5, 30, tzinfo=UTC),
            datetime(2030, 11, 3, 6, 30, tzinfo=UTC),
        ]

    def test_a_pytz_date_made_without_localize_is_read_as_its_wall_time(self, pytz):
        # datetime(..., tzinfo=pytz_zone) carries local mean time (-04:56 in New York).
        eastern = pytz.timezone("America/New_York")
        nine = datetime(2030, 1, 8, 9, 0, tzinfo=eastern)
        nine_ny = datetime(2030, 1, 8, 14, 0, tzinfo=UTC)
        assert DateTimeTrigger(nine).next_fire_times(1, T0) == [nine_ny]
        assert IntervalTrigger(hours=1, start_date=nine).next_fire_times(1, T0) == [nine_ny]
        cron = CronTrigger("0 * * * *", start_date=nine, end_date=nine + timedelta(hours=2))
        assert cron.next_fire_times(5, T0) == [
            nine_ny,
            nine_ny + timedelta(hours=1),
            nine_ny + timedelta(hours=2),
        ]

    def test_a_pytz_zone_is_written_by_its_name(self, pytz):
        trigger = CronTrigger("0 9 * * *", timezone=pytz.timezone("America/New_York"))
        assert trigger.to_dict()["timezone"] == "America/New_York"
        assert trigger == CronTrigger("0 9 * * *", timezone="America/New_York")
        assert SchedulerConfig(timezone=pytz.timezone("Europe/Paris")).tzinfo == ZoneInfo(
            "Europe/Paris"
        )


# ---------------------------------------------------------------- bounds


class TestBounds:
    @pytest.mark.parametrize("kind", ["interval", "cron"])
    @pytest.mark.parametrize(
        ("start", "end"),
        [
            ("2030-01-10T00:00:00", datetime(2030, 1, 1, tzinfo=UTC)),  # naive, aware earlier
            ("2030-01-01T00:00:00", "2030-02-01T00:00:00+00:00"),  # naive, aware later
            ("2030-01-01T00:00:00+00:00", "2030-02-01"),  # aware, naive
        ],
    )
    def test_a_naive_and_an_aware_bound_are_refused_at_construction(self, kind, start, end):
        with pytest.raises(TriggerError, match="both with an offset or both without"):
            if kind == "interval":
                IntervalTrigger(hours=1, start_date=start, end_date=end)
            else:
                CronTrigger("0 * * * *", start_date=start, end_date=end)

    @pytest.mark.parametrize("kind", ["interval", "cron"])
    @pytest.mark.parametrize(
        ("start", "end"),
        [
            ("2030-02-01T00:00:00", "2030-01-01T00:00:00"),
            ("2030-02-01T00:00:00+00:00", "2030-02-01T00:30:00+01:00"),
        ],
    )
    def test_an_end_before_the_start_is_refused_at_construction(self, kind, start, end):
        with pytest.raises(TriggerError, match="must be after start_date"):
            if kind == "interval":
                IntervalTrigger(hours=1, start_date=start, end_date=end)
            else:
                CronTrigger("0 * * * *", start_date=start, end_date=end)

    def test_naive_bounds_of_a_cron_with_its_own_zone_are_compared_in_it(self):
        # 02:30 does not exist on 2030-03-10 in New York: read before the jump (07:30 UTC),
        # it is after 03:10 EDT (07:10 UTC), though its wall time is earlier.
        with pytest.raises(TriggerError, match="must be after start_date"):
            CronTrigger(
                "* * * * *",
                timezone="America/New_York",
                start_date="2030-03-10T02:30:00",
                end_date="2030-03-10T03:10:00",
            )

    @pytest.mark.parametrize(
        "trigger",
        [
            lambda: DateTimeTrigger("9999-12-31T23:00:00"),
            lambda: CronTrigger("0 9 * * *", start_date="9999-12-31T23:00:00"),
            lambda: IntervalTrigger(hours=1, start_date="9999-12-31T23:00:00"),
            lambda: IntervalTrigger(hours=1, end_date="9999-12-31T23:00:00"),
        ],
    )
    async def test_a_date_past_the_calendar_in_the_scheduler_zone_is_a_trigger_error(self, trigger):
        manager = SchedulerManager(config=SchedulerConfig(timezone="America/New_York"))
        try:
            with pytest.raises(TriggerError, match="out of range"):
                manager.add_job(noop, trigger(), id="late")
            assert manager.get_jobs() == []
        finally:
            await manager.shutdown()

    @pytest.mark.parametrize(
        "make",
        [
            lambda: DateTimeTrigger("9999-12-31T23:00:00", timezone="America/New_York"),
            lambda: CronTrigger(
                "0 9 * * *", timezone="America/New_York", start_date="9999-12-31T23:00:00"
            ),
            lambda: IntervalTrigger(hours=1, start_date="9999-12-31T23:00:00-05:00"),
            lambda: CronTrigger("0 9 * * *", end_date="0001-01-01T00:00:00+05:00"),
        ],
    )
    def test_a_date_past_the_calendar_in_a_known_zone_is_refused_at_construction(self, make):
        with pytest.raises(TriggerError, match="out of range"):
            make()


# ---------------------------------------------------------------- interval sizes


class TestIntervalSizes:
    @pytest.mark.parametrize(
        ("kwargs", "quoted"),
        [
            ({"seconds": 1e-6}, "1e-06"),
            ({"seconds": 0.009}, "0.009"),
            ({"minutes": 1e-7}, "6e-06"),
            ({"seconds": 1e-7}, "1e-07"),  # less than a microsecond: not taken for zero
        ],
    )
    def test_an_interval_below_ten_milliseconds_is_refused(self, kwargs, quoted):
        with pytest.raises(TriggerError) as info:
            IntervalTrigger(**kwargs)
        message = str(info.value)
        assert f"interval of {quoted} seconds is too short" in message
        assert "at least 0.01 seconds" in message

    def test_ten_milliseconds_is_the_shortest_interval(self):
        assert IntervalTrigger(seconds=0.01).next_fire_times(3, T0) == [
            T0,
            T0 + timedelta(milliseconds=10),
            T0 + timedelta(milliseconds=20),
        ]
        assert IntervalTrigger(seconds=0.01).describe() == "Every 0.01 seconds"

    @pytest.mark.parametrize(
        ("kwargs", "quoted"),
        [
            ({"seconds": 10**400}, "seconds=1000000000"),
            ({"days": 10**30}, "days=1000000000000000000000000000000"),
            ({"weeks": 1e308}, "weeks=1e+308"),
            ({"hours": 2**1100}, "hours=1358"),
        ],
    )
    def test_a_huge_interval_is_a_trigger_error_not_an_overflow(self, kwargs, quoted):
        with pytest.raises(TriggerError, match="too long") as info:
            IntervalTrigger(**kwargs)
        assert quoted in str(info.value)
        assert len(str(info.value)) < 200

    def test_a_huge_jitter_is_refused(self):
        for jitter in (10**400, 1e300, 10**12):
            with pytest.raises(TriggerError, match="jitter") as info:
                IntervalTrigger(seconds=1, jitter=jitter)
            assert len(str(info.value)) < 200
        with pytest.raises(TriggerError, match="jitter"):
            CronTrigger("* * * * *", jitter=1e300)


# ---------------------------------------------------------------- bad trigger data

_HUGE = 10**400
_BAD_TRIGGER_DATA: list[Any] = [
    {"type": "interval", "seconds": _HUGE},
    {"type": "interval", "minutes": _HUGE, "seconds": 1.5},
    {"type": "interval", "seconds": -_HUGE},
    {"type": "interval", "seconds": 1, "jitter": _HUGE},
    {"type": "interval", "seconds": 1e-9},
    {"type": "interval", "seconds": float("nan")},
    {"type": "interval", "seconds": [1]},
    {"type": "interval", "seconds": 1, "start_date": "9" * 400},
    {"type": "interval", "seconds": 1, "start_date": "+999999999-01-01"},
    {"type": "interval", "seconds": 1, "start_date": "9999-12-31T23:59:59-14:00"},
    {"type": "interval", "seconds": 1, "start_date": "2030-01-01", "end_date": "2030-01-01Z"},
    {"type": "interval", "seconds": 1, "start_now": "yes"},
    {"type": "cron", "expr": "0 0 1 1 *", "jitter": _HUGE},
    {"type": "cron", "expr": "1" * 400 + " * * * *"},
    {"type": "cron", "expr": 5},
    {"type": "cron", "expr": "* * * * *", "timezone": "UTC+99:00"},
    {"type": "cron", "expr": "* * * * *", "timezone": "UTC+" + "1" * 400},
    {"type": "cron", "expr": "* * * * *", "timezone": "../../etc/passwd"},
    {"type": "cron", "expr": "* * * * *", "timezone": ""},
    {"type": "cron", "expr": "* * * * *", "timezone": 330},
    {"type": "cron", "expr": "* * * * *", "timezone": "\x00"},
    {"type": "date", "run_date": "99999-01-01"},
    {"type": "date", "run_date": "0001-01-01T00:00:00+14:00"},
    {"type": "date", "run_date": "9999-12-31T23:00:00", "timezone": "America/New_York"},
    {"type": "date", "run_date": _HUGE},
    {"type": "date", "run_date": "2030-01-01", "timezone": "Mars/Olympus"},
    {"type": "weekly"},
    {"type": "interval", "seconds": 1, "bogus": 2},
    {"type": "interval", "seconds": 1, **{f"{n}{'x' * 200}": 1 for n in range(50)}},
    {"type": "x" * 400},
    [{"type": "interval", "seconds": 1}] * 100,
]


class TestBadTriggerData:
    @pytest.mark.parametrize("data", _BAD_TRIGGER_DATA, ids=lambda d: repr(d)[:60])
    def test_every_bad_trigger_dict_is_a_short_type_or_value_error(self, data):
        with pytest.raises((TypeError, ValueError)) as info:
            trigger_from_dict(data)
        assert type(info.value) is not OverflowError
        assert len(str(info.value)) < 300


# ---------------------------------------------------------------- the end of the calendar


class TestNoNextFire:
    def test_an_unexpected_overflow_surfaces_instead_of_ending_the_schedule(self, monkeypatch):
        def broken(self, previous, now):
            raise OverflowError("a bug, not the end of the calendar")

        schedule = IntervalTrigger(seconds=10).to_apscheduler(UTC, T0)
        monkeypatch.setattr(IntervalSchedule, "next_base", broken)
        with pytest.raises(OverflowError, match="a bug"):
            schedule.get_next_fire_time(T0, T0)
        with pytest.raises(OverflowError, match="a bug"):
            schedule.fire_times(3, T0)

    def test_a_cron_overflow_is_not_taken_for_the_end_of_the_calendar(self, monkeypatch):
        schedule = CronTrigger("0 9 * * *").to_apscheduler(UTC, T0)

        def broken(after: datetime, tz: tzinfo) -> datetime:
            raise OverflowError("a bug, not the end of the calendar")

        monkeypatch.setattr(schedule, "expression", types.SimpleNamespace(next_after=broken))
        with pytest.raises(OverflowError, match="a bug"):
            schedule.get_next_fire_time(None, T0)

    @pytest.mark.parametrize(
        ("trigger", "start", "count"),
        [
            (CronTrigger("0 9 * * *", timezone="America/New_York"), "9999-12-29", 3),
            (CronTrigger("* * * * *", timezone="America/New_York"), "9999-12-31T23:58", 2),
            (CronTrigger("0 0 * * *", timezone="Asia/Tokyo"), "9999-12-30", 1),
            (IntervalTrigger(hours=7), "9999-12-31T00:00", 4),
            (IntervalTrigger(days=365 * 900), "9999-12-31T00:00", 1),
        ],
    )
    def test_a_schedule_ends_at_the_last_date_a_datetime_holds(self, trigger, start, count):
        times = trigger.next_fire_times(10, datetime.fromisoformat(start).replace(tzinfo=UTC))
        assert len(times) == count
        schedule = trigger.to_apscheduler(UTC, times[0])
        assert schedule.get_next_fire_time(times[-1], times[-1]) is None

    def test_jitter_never_runs_past_the_calendar(self):
        now = datetime(9999, 12, 31, 22, 30, tzinfo=UTC)
        for trigger in (
            IntervalTrigger(hours=1, start_now=False, jitter=3000),
            CronTrigger("30 23 * * *", jitter=3000),
        ):
            schedule = trigger.to_apscheduler(UTC, now)
            for _ in range(50):
                first = schedule.first_fire_time(now)
                assert first is not None, trigger
                assert datetime(9999, 12, 31, 23, 30, tzinfo=UTC) <= first

    @pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/New_York"])
    def test_fire_times_from_the_first_day_of_the_calendar(self, zone):
        tz = ZoneInfo(zone)
        times = CronTrigger("0 12 * * *", timezone=zone).next_fire_times(
            2, datetime(1, 1, 1, tzinfo=tz)
        )
        assert [t.replace(tzinfo=None).isoformat(timespec="minutes") for t in times] == [
            "0001-01-01T12:00",
            "0001-01-02T12:00",
        ]


# ---------------------------------------------------------------- zones round-trip

_ZONES: list[tuple[str, Any]] = [
    ("iana", "Europe/Paris"),
    ("iana-zoneinfo", ZoneInfo("America/New_York")),
    ("utc-name", "UTC"),
    ("utc-timezone", timezone.utc),
    ("utc-zoneinfo", ZoneInfo("UTC")),
    ("plus-05:30", timezone(timedelta(hours=5, minutes=30))),
    ("minus-03:00", timezone(timedelta(hours=-3))),
    ("odd-seconds", timezone(timedelta(hours=1, seconds=7))),
    ("named-offset", timezone(timedelta(hours=1), "CET")),
    ("local", "local"),
    ("tzlocal", tzlocal.get_localzone()),
    ("pytz-new-york", "pytz:America/New_York"),
    ("pytz-utc", "pytz:utc"),
    ("pytz-fixed", "pytz:fixed+330"),
]
_TRIGGERS = [
    ("cron", lambda tz: CronTrigger("30 9 * * mon-fri", timezone=tz)),
    ("cron-bounded", lambda tz: CronTrigger("0 */6 * * *", timezone=tz, end_date="2030-03-01")),
    ("date", lambda tz: DateTimeTrigger("2030-01-09T10:15:00", timezone=tz)),
]


def _zone(spec: Any) -> Any:
    if not (isinstance(spec, str) and spec.startswith("pytz:")):
        return spec
    if _pytz is None:
        pytest.fail("pytz is not installed: these tests need it (pip install pytz)")
    name = spec.removeprefix("pytz:")
    if name == "utc":
        return _pytz.utc
    if name.startswith("fixed"):
        return _pytz.FixedOffset(int(name.removeprefix("fixed")))
    return _pytz.timezone(name)


class TestZonesRoundTrip:
    @pytest.mark.parametrize("make", [m for _, m in _TRIGGERS], ids=[n for n, _ in _TRIGGERS])
    @pytest.mark.parametrize("spec", [z for _, z in _ZONES], ids=[n for n, _ in _ZONES])
    def test_a_trigger_read_back_from_its_dict_is_the_same_trigger(self, make, spec):
        trigger = make(_zone(spec))
        data = trigger.to_dict()
        again = trigger_from_dict(data)
        assert again.to_dict() == data
        assert again == trigger
        summer = datetime(2030, 7, 1, tzinfo=UTC)
        for start in (T0, summer):
            assert again.next_fire_times(5, start) == trigger.next_fire_times(5, start)
        assert again.describe() == trigger.describe()
        # The name is one that timezone= and SchedulerConfig accept as they are.
        assert SchedulerConfig(timezone=data["timezone"]).tzinfo.utcoffset(T0) == (
            trigger.next_fire_times(1, T0)[0].utcoffset()
        )

    def test_a_fixed_offset_is_written_as_utc_plus_hours_and_minutes(self):
        trigger = CronTrigger("0 9 * * *", timezone=timezone(timedelta(hours=5, minutes=30)))
        assert trigger.to_dict()["timezone"] == "UTC+05:30"
        assert trigger_from_dict(trigger.to_dict()).next_fire_times(1, T0) == [
            datetime(2030, 1, 8, 3, 30, tzinfo=UTC)
        ]
        assert CronTrigger("0 9 * * *", timezone="UTC-03:00").next_fire_times(1, T0) == [
            datetime(2030, 1, 7, 12, 0, tzinfo=UTC)
        ]

    def test_a_zone_without_a_name_is_refused(self):
        class Mystery(tzinfo):
            def utcoffset(self, dt: datetime | None) -> timedelta:
                return timedelta(hours=2)

            def dst(self, dt: datetime | None) -> timedelta:
                return timedelta(0)

        with pytest.raises(TriggerError, match="cannot be written down"):
            CronTrigger("0 9 * * *", timezone=Mystery())
        with pytest.raises(TriggerError, match="cannot be written down"):
            DateTimeTrigger("2030-01-01", timezone=Mystery())
