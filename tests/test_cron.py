"""Unit tests for the crontab dialect (Debian cron semantics)."""

from __future__ import annotations

import pickle
import re
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from nexios_contrib_scheduler.cron import ALIASES, CronExpression, CronSyntaxError

UTC = timezone.utc
NEW_YORK = ZoneInfo("America/New_York")


def at(text: str) -> datetime:
    """An aware datetime from ISO text with an offset."""
    return datetime.fromisoformat(text)


def fires(expr: str, after: str, n: int, tz: timezone | ZoneInfo = UTC) -> list[str]:
    return [dt.isoformat() for dt in CronExpression(expr).next_fire_times(n, at(after), tz)]


class TestParse:
    @pytest.mark.parametrize(
        ("expr", "field", "values"),
        [
            ("*/15 * * * *", "minutes", {0, 15, 30, 45}),
            ("1-10/3 * * * *", "minutes", {1, 4, 7, 10}),
            ("5,10-12,*/30 * * * *", "minutes", {0, 5, 10, 11, 12, 30}),
            ("*/100 * * * *", "minutes", {0}),
            ("05 * * * *", "minutes", {5}),
            ("0 */5 * * *", "hours", {0, 5, 10, 15, 20}),
            ("0 0 */10 * *", "days", {1, 11, 21, 31}),
            ("0 0 * */5 *", "months", {1, 6, 11}),
            ("0 0 * * */3", "weekdays", {0, 3, 6}),
            ("0 0 * * 1-7/2", "weekdays", {1, 3, 5, 0}),
            ("0 0 * * 7", "weekdays", {0}),
            ("0 0 * * 0-7", "weekdays", {0, 1, 2, 3, 4, 5, 6}),
            # Debian: a stepped one-value range is just that value (cronsim: 6-max/2).
            ("6-6/2 * * * *", "minutes", {6}),
            ("0 0 * * 6-6/3", "weekdays", {6}),
            ("0 0 31-31/5 * *", "days", {31}),
        ],
    )
    def test_field_values(self, expr: str, field: str, values: set[int]) -> None:
        assert getattr(CronExpression(expr), field) == frozenset(values)

    @pytest.mark.parametrize(
        "text", ["0 9 * * 1-5", "  0 9 * * 1-5\n", "0\t9 *  *\t 1-5", "0 9 * * mon-FRI"]
    )
    def test_whitespace_and_spelling_normalise(self, text: str) -> None:
        cron = CronExpression(text)
        assert cron == CronExpression("0 9 * * 1-5")
        assert hash(cron) == hash(CronExpression("0 9 * * 1-5"))
        assert cron.expr == text.strip()

    @pytest.mark.parametrize(
        ("a", "b", "equal"),
        [
            ("0 0 * * 0", "0 0 * * 7", True),
            ("@daily", "0 0 * * *", True),
            ("0,30 1 * * *", "*/30 1 * * *", False),  # fixed-time vs wildcard DST rule
            ("0,30 * * * *", "*/30 * * * *", True),
            ("0 0 1-31 * 1", "0 0 * * 1", False),  # day rule: OR vs AND
            ("0 0-23 * * *", "0 * * * *", False),
            ("0 9 * * *", "0 10 * * *", False),
        ],
    )
    def test_equality(self, a: str, b: str, equal: bool) -> None:
        assert (CronExpression(a) == CronExpression(b)) is equal

    def test_pickle_round_trip(self) -> None:
        cron = CronExpression("*/7 3-20/3 1,15 * mon-fri")
        clone = pickle.loads(pickle.dumps(cron))
        assert clone == cron and clone.expr == cron.expr
        after = at("2026-04-01T00:00:00+00:00")
        assert clone.next_after(after, UTC) == cron.next_after(after, UTC)

    def test_repr_and_immutability(self) -> None:
        cron = CronExpression("0 9 * * 1-5")
        assert repr(cron) == "CronExpression('0 9 * * 1-5')"
        with pytest.raises(AttributeError):
            cron.expr = "x"  # type: ignore[misc]
        assert cron != "0 9 * * 1-5"

    def test_flags(self) -> None:
        cron = CronExpression("0 9 1 * mon")
        assert cron.day_or and cron.fixed_time
        assert not CronExpression("*/5 9 1 * mon").fixed_time
        assert not CronExpression("0 9 */2 * mon").day_or


class TestValidation:
    @pytest.mark.parametrize(
        ("expr", "message"),
        [
            ("61 * * * *", "minute value 61 out of range 0-59 in '61 * * * *'"),
            ("* 24 * * *", "hour value 24 out of range 0-23 in '* 24 * * *'"),
            ("* * 0 * *", "day-of-month value 0 out of range 1-31 in '* * 0 * *'"),
            ("* * * 13 *", "month value 13 out of range 1-12 in '* * * 13 *'"),
            ("* * * * 8", "day-of-week value 8 out of range 0-7 in '* * * * 8'"),
            ("5-64/30 * * * *", "minute value 64 out of range 0-59 in '5-64/30 * * * *'"),
            (
                "* * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), "
                "got 4 in '* * * *'",
            ),
            (
                "* * * * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), "
                "got 6 in '* * * * * *'",
            ),
            (
                "",
                "expected 5 fields (minute hour day-of-month month day-of-week), got 0 in ''",
            ),
            (
                "0 0 * * FUNDAY",
                "day-of-week value 'FUNDAY' is not a number or name in '0 0 * * FUNDAY'",
            ),
            ("x * * * *", "minute value 'x' is not a number in 'x * * * *'"),
            ("-1 * * * *", "minute value '' is not a number in '-1 * * * *'"),
            ("1-2-3 * * * *", "minute value '2-3' is not a number in '1-2-3 * * * *'"),
            ("+1 * * * *", "minute value '+1' is not a number in '+1 * * * *'"),
            ("\u0663 * * * *", "minute value '\u0663' is not a number in '\u0663 * * * *'"),
            (
                "5/10 * * * *",
                "minute step '5/10' needs a range or '*' (write 5-59/10) in '5/10 * * * *'",
            ),
            ("*/0 * * * *", "minute step in '*/0' must be at least 1 in '*/0 * * * *'"),
            ("*/x * * * *", "minute step 'x' is not a number in '*/x * * * *'"),
            ("1/2/3 * * * *", "minute step '2/3' is not a number in '1/2/3 * * * *'"),
            (
                "0 20-3 * * *",
                "hour range '20-3' starts after it ends (20 > 3) in '0 20-3 * * *'",
            ),
            ("1,,2 * * * *", "minute field '1,,2' has an empty item in '1,,2 * * * *'"),
            ("0 0 1, * *", "day-of-month field '1,' has an empty item in '0 0 1, * *'"),
            (
                "0 0 30 2 *",
                "day-of-month '30' never occurs in February, so '0 0 30 2 *' can never fire",
            ),
            (
                "0 0 31 4,6,9,11 *",
                "day-of-month '31' never occurs in April, June, September or November, "
                "so '0 0 31 4,6,9,11 *' can never fire",
            ),
            (
                "0 0 30,31 feb */7",
                "day-of-month '30,31' never occurs in February, "
                "so '0 0 30,31 feb */7' can never fire",
            ),
        ],
    )
    def test_error_messages(self, expr: str, message: str) -> None:
        with pytest.raises(CronSyntaxError) as info:
            CronExpression(expr)
        assert str(info.value) == message

    @pytest.mark.parametrize("expr", ["0 0 29 2 *", "0 0 30 2 1", "0 0 31 2 mon,*", "0 0 29 2 */7"])
    def test_rare_but_possible_days_are_accepted(self, expr: str) -> None:
        CronExpression(expr)

    def test_only_the_first_character_decides_the_day_rule(self) -> None:
        # "mon,*" is restricted (OR: every day of February); "*,mon" is not (AND: never).
        assert CronExpression("0 0 31 2 mon,*").day_or
        with pytest.raises(CronSyntaxError, match="can never fire"):
            CronExpression("0 0 31 2 *,mon")

    def test_error_is_a_value_error(self) -> None:
        assert issubclass(CronSyntaxError, ValueError)

    @pytest.mark.parametrize("value", [None, 5, b"* * * * *", ["*"] * 5])
    def test_non_string_is_a_type_error(self, value: object) -> None:
        with pytest.raises(TypeError):
            CronExpression(value)  # type: ignore[arg-type]

    def test_naive_after_is_rejected(self) -> None:
        with pytest.raises(ValueError, match="aware"):
            CronExpression("* * * * *").next_after(datetime(2026, 1, 1), UTC)

    def test_tz_must_be_a_tzinfo(self) -> None:
        with pytest.raises(TypeError):
            CronExpression("* * * * *").next_after(at("2026-01-01T00:00:00+00:00"), None)  # type: ignore[arg-type]

    def test_negative_count_is_rejected(self) -> None:
        with pytest.raises(ValueError):
            CronExpression("* * * * *").next_fire_times(-1, at("2026-01-01T00:00:00+00:00"), UTC)

    def test_no_fire_time_before_year_10000(self) -> None:
        with pytest.raises(OverflowError, match="no fire time before year 10000"):
            CronExpression("0 0 1 1 *").next_after(at("9999-06-01T00:00:00+00:00"), UTC)


class TestNames:
    @pytest.mark.parametrize(
        ("expr", "field", "values"),
        [
            ("0 0 * JAN-mar *", "months", {1, 2, 3}),
            ("0 0 * jan,Jul,DEC *", "months", {1, 7, 12}),
            ("0 0 * jan-dec/3 *", "months", {1, 4, 7, 10}),
            ("0 0 * * mon-FRI", "weekdays", {1, 2, 3, 4, 5}),
            ("0 0 * * sun", "weekdays", {0}),
            ("0 0 * * Sat,sUn", "weekdays", {0, 6}),
            ("0 0 * * thu-7", "weekdays", {0, 4, 5, 6}),
            ("0 0 * 2-apr *", "months", {2, 3, 4}),
        ],
    )
    def test_names(self, expr: str, field: str, values: set[int]) -> None:
        assert getattr(CronExpression(expr), field) == frozenset(values)

    @pytest.mark.parametrize(
        ("expr", "bad"),
        [
            ("JAN * * * *", "minute value 'JAN'"),
            ("0 0 mon * *", "day-of-month value 'mon'"),
            ("0 0 * * jan", "day-of-week value 'jan'"),
            ("0 0 * mon *", "month value 'mon'"),
            ("0 0 * * Monday", "day-of-week value 'Monday'"),
            ("0 0 * * sat-sun", "day-of-week range 'sat-sun' starts after it ends (6 > 0)"),
        ],
    )
    def test_names_only_where_they_belong(self, expr: str, bad: str) -> None:
        with pytest.raises(CronSyntaxError, match=re.escape(bad)):
            CronExpression(expr)

    def test_names_fire_like_numbers(self) -> None:
        assert fires("0 9 * feb mon-fri", "2026-01-30T00:00:00+00:00", 2) == [
            "2026-02-02T09:00:00+00:00",
            "2026-02-03T09:00:00+00:00",
        ]


class TestAliases:
    def test_alias_table(self) -> None:
        assert ALIASES == {
            "@yearly": "0 0 1 1 *",
            "@annually": "0 0 1 1 *",
            "@monthly": "0 0 1 * *",
            "@weekly": "0 0 * * 0",
            "@daily": "0 0 * * *",
            "@midnight": "0 0 * * *",
            "@hourly": "0 * * * *",
            "@every_minute": "* * * * *",
        }

    @pytest.mark.parametrize(("alias", "expansion"), sorted(ALIASES.items()))
    def test_alias_equals_expansion(self, alias: str, expansion: str) -> None:
        cron = CronExpression(alias)
        assert cron == CronExpression(expansion)
        assert cron.expr == alias

    @pytest.mark.parametrize(
        ("alias", "after", "expected"),
        [
            ("@yearly", "2026-04-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
            ("@monthly", "2026-04-01T00:00:00+00:00", "2026-05-01T00:00:00+00:00"),
            ("@weekly", "2026-04-01T00:00:00+00:00", "2026-04-05T00:00:00+00:00"),
            ("@daily", "2026-04-01T00:00:00+00:00", "2026-04-02T00:00:00+00:00"),
            ("@hourly", "2026-04-01T00:00:00+00:00", "2026-04-01T01:00:00+00:00"),
            ("@every_minute", "2026-04-01T00:00:00+00:00", "2026-04-01T00:01:00+00:00"),
            ("@DAILY", "2026-04-01T00:00:00+00:00", "2026-04-02T00:00:00+00:00"),
        ],
    )
    def test_alias_fires(self, alias: str, after: str, expected: str) -> None:
        assert fires(alias, after, 1) == [expected]

    @pytest.mark.parametrize("alias", ["@fortnightly", "@reboot", "@", "@daily extra"])
    def test_unknown_alias_lists_the_allowed_ones(self, alias: str) -> None:
        with pytest.raises(CronSyntaxError) as info:
            CronExpression(alias)
        message = str(info.value)
        assert repr(alias) in message
        assert all(name in message for name in ALIASES)


class TestDayRule:
    # April 2026 starts on a Wednesday; the 13th is a Monday.
    @pytest.mark.parametrize(
        ("expr", "expected"),
        [
            # Both fields restricted: either may match.
            ("0 0 13 * 5", ["2026-04-03", "2026-04-10", "2026-04-13", "2026-04-17"]),
            ("0 0 1 * 1", ["2026-04-06", "2026-04-13", "2026-04-20", "2026-04-27"]),
            ("0 0 1-31 * 1", ["2026-04-02", "2026-04-03", "2026-04-04", "2026-04-05"]),
            ("0 0 29 2 mon", ["2027-02-01", "2027-02-08", "2027-02-15", "2027-02-22"]),
            # One field starts with '*': both must match, even when it is '*/n'.
            ("0 0 13 * *", ["2026-04-13", "2026-05-13", "2026-06-13", "2026-07-13"]),
            ("0 0 * * 5", ["2026-04-03", "2026-04-10", "2026-04-17", "2026-04-24"]),
            ("0 0 */2 * 5", ["2026-04-03", "2026-04-17", "2026-05-01", "2026-05-15"]),
            ("0 0 13 * */5", ["2026-09-13", "2026-11-13", "2026-12-13", "2027-06-13"]),
            ("0 0 * * */2", ["2026-04-02", "2026-04-04", "2026-04-05", "2026-04-07"]),
            ("0 0 */10 * 0-7", ["2026-04-11", "2026-04-21", "2026-05-01", "2026-05-11"]),
        ],
    )
    def test_day_rule(self, expr: str, expected: list[str]) -> None:
        got = fires(expr, "2026-04-01T00:00:00+00:00", 4)
        assert got == [f"{day}T00:00:00+00:00" for day in expected]

    @pytest.mark.parametrize(
        ("expr", "after", "expected"),
        [
            ("0 0 29 2 *", "2026-04-01T00:00:00+00:00", ["2028-02-29", "2032-02-29"]),
            ("0 0 29 2 *", "2096-03-01T00:00:00+00:00", ["2104-02-29", "2108-02-29"]),
            ("0 0 29 2 *", "2399-01-01T00:00:00+00:00", ["2400-02-29", "2404-02-29"]),
            ("0 0 29 2 */7", "2026-04-01T00:00:00+00:00", ["2032-02-29", "2060-02-29"]),
            ("0 0 29 2 */7", "2088-03-01T00:00:00+00:00", ["2128-02-29", "2156-02-29"]),
            ("0 0 31 * *", "2026-04-01T00:00:00+00:00", ["2026-05-31", "2026-07-31"]),
            ("0 0 30 * *", "2026-01-31T00:00:00+00:00", ["2026-03-30", "2026-04-30"]),
        ],
    )
    def test_rare_days(self, expr: str, after: str, expected: list[str]) -> None:
        assert fires(expr, after, 2) == [f"{day}T00:00:00+00:00" for day in expected]


class TestNextAfter:
    @pytest.mark.parametrize(
        ("expr", "after", "expected"),
        [
            ("* * * * *", "2026-04-01T12:00:00+00:00", "2026-04-01T12:01:00+00:00"),
            ("* * * * *", "2026-04-01T12:00:00.000001+00:00", "2026-04-01T12:01:00+00:00"),
            ("* * * * *", "2026-04-01T12:00:59.999999+00:00", "2026-04-01T12:01:00+00:00"),
            ("* * * * *", "2026-04-01T11:59:59.999999+00:00", "2026-04-01T12:00:00+00:00"),
            ("0 9 * * 1-5", "2026-04-03T09:00:00+00:00", "2026-04-06T09:00:00+00:00"),
            ("59 23 31 12 *", "2026-12-31T23:59:00+00:00", "2027-12-31T23:59:00+00:00"),
            ("0 0 1 1 *", "2026-12-31T23:59:59+00:00", "2027-01-01T00:00:00+00:00"),
            ("*/7 3-20/3 1,15 * mon-fri", "2026-04-01T20:57:00+00:00", "2026-04-02T03:00:00+00:00"),
            ("*/7 3-20/3 1,15 * mon-fri", "2026-04-03T18:56:00+00:00", "2026-04-06T03:00:00+00:00"),
            ("30 4 * * *", "2026-04-01T04:30:00+05:00", "2026-04-01T04:30:00+00:00"),
        ],
    )
    def test_next_after_utc(self, expr: str, after: str, expected: str) -> None:
        result = CronExpression(expr).next_after(at(after), UTC)
        assert result.isoformat() == expected
        assert result.tzinfo is UTC

    def test_fixed_offset_zone(self) -> None:
        india = timezone(timedelta(hours=5, minutes=30))
        assert fires("0 9 * * *", "2026-04-01T04:00:00+00:00", 2, india) == [
            "2026-04-02T09:00:00+05:30",
            "2026-04-03T09:00:00+05:30",
        ]

    def test_after_in_another_zone(self) -> None:
        after = datetime(2026, 4, 1, 9, 0, tzinfo=ZoneInfo("Asia/Tokyo"))
        result = CronExpression("0 9 * * *").next_after(after, NEW_YORK)
        assert result.isoformat() == "2026-04-01T09:00:00-04:00"
        assert result.tzinfo is NEW_YORK

    def test_next_fire_times(self) -> None:
        cron = CronExpression("0 9 * * 1-5")
        assert cron.next_fire_times(0, at("2026-04-01T00:00:00+00:00"), UTC) == []
        assert fires("0 9 * * 1-5", "2026-04-02T10:00:00+00:00", 3) == [
            "2026-04-03T09:00:00+00:00",
            "2026-04-06T09:00:00+00:00",
            "2026-04-07T09:00:00+00:00",
        ]


class TestDstTransitions:
    @pytest.mark.parametrize(
        ("zone", "expr", "after", "expected"),
        [
            # New York: 2026-03-08 02:00 -> 03:00, 2026-11-01 02:00 -> 01:00.
            (
                "America/New_York",
                "30 2 * * *",
                "2026-03-08T00:00:00+00:00",
                ["2026-03-08T03:00:00-04:00", "2026-03-09T02:30:00-04:00"],
            ),
            (
                "America/New_York",
                "0,30 2 * * *",
                "2026-03-08T00:00:00+00:00",
                ["2026-03-08T03:00:00-04:00", "2026-03-09T02:00:00-04:00"],
            ),
            (
                "America/New_York",
                "*/30 * * * *",
                "2026-03-08T06:15:00+00:00",
                ["2026-03-08T01:30:00-05:00", "2026-03-08T03:00:00-04:00"],
            ),
            (
                "America/New_York",
                "30 1 * * *",
                "2026-11-01T04:00:00+00:00",
                ["2026-11-01T01:30:00-04:00", "2026-11-02T01:30:00-05:00"],
            ),
            (
                "America/New_York",
                "30 * * * *",
                "2026-11-01T04:00:00+00:00",
                [
                    "2026-11-01T00:30:00-04:00",
                    "2026-11-01T01:30:00-04:00",
                    "2026-11-01T01:30:00-05:00",
                    "2026-11-01T02:30:00-05:00",
                ],
            ),
            (  # starting in the first pass of the repeated hour
                "America/New_York",
                "*/20 * * * *",
                "2026-11-01T05:30:00+00:00",
                [
                    "2026-11-01T01:40:00-04:00",
                    "2026-11-01T01:00:00-05:00",
                    "2026-11-01T01:20:00-05:00",
                    "2026-11-01T01:40:00-05:00",
                    "2026-11-01T02:00:00-05:00",
                ],
            ),
            (
                "America/New_York",
                "0-59/20 1 * * *",
                "2026-11-01T05:30:00+00:00",
                ["2026-11-01T01:40:00-04:00", "2026-11-02T01:00:00-05:00"],
            ),
            (  # starting in the second pass: the fixed-time job already ran
                "America/New_York",
                "30 1 * * *",
                "2026-11-01T06:10:00+00:00",
                ["2026-11-02T01:30:00-05:00"],
            ),
            (
                "America/New_York",
                "0-59/20 1 * * *",
                "2026-11-01T06:10:00+00:00",
                ["2026-11-02T01:00:00-05:00"],
            ),
            (
                "America/New_York",
                "30 * * * *",
                "2026-11-01T06:10:00+00:00",
                ["2026-11-01T01:30:00-05:00", "2026-11-01T02:30:00-05:00"],
            ),
            # Riga: 2026-03-29 03:00 -> 04:00, 2026-10-25 04:00 -> 03:00.
            (
                "Europe/Riga",
                "15 3 * * *",
                "2026-03-28T22:00:00+00:00",
                ["2026-03-29T04:00:00+03:00", "2026-03-30T03:15:00+03:00"],
            ),
            (
                "Europe/Riga",
                "15 3 * * *",
                "2026-10-24T22:00:00+00:00",
                ["2026-10-25T03:15:00+03:00", "2026-10-26T03:15:00+02:00"],
            ),
            (
                "Europe/Riga",
                "15 * * * *",
                "2026-10-24T23:30:00+00:00",
                [
                    "2026-10-25T03:15:00+03:00",
                    "2026-10-25T03:15:00+02:00",
                    "2026-10-25T04:15:00+02:00",
                ],
            ),
            # Sydney: 2026-04-05 03:00 -> 02:00, 2026-10-04 02:00 -> 03:00.
            (
                "Australia/Sydney",
                "30 2 * * 0",
                "2026-10-03T12:00:00+00:00",
                ["2026-10-04T03:00:00+11:00", "2026-10-11T02:30:00+11:00"],
            ),
            (
                "Australia/Sydney",
                "30 2 * * *",
                "2026-04-04T12:00:00+00:00",
                ["2026-04-05T02:30:00+11:00", "2026-04-06T02:30:00+10:00"],
            ),
            (  # minute field starts with '*': a wildcard job, both passes fire
                "Australia/Sydney",
                "*/30 2 * * *",
                "2026-04-04T14:00:00+00:00",
                [
                    "2026-04-05T02:00:00+11:00",
                    "2026-04-05T02:30:00+11:00",
                    "2026-04-05T02:00:00+10:00",
                    "2026-04-05T02:30:00+10:00",
                    "2026-04-06T02:00:00+10:00",
                ],
            ),
            # Lord Howe shifts by 30 minutes: 2026-04-05 02:00 -> 01:30, 2026-10-04 02:00 -> 02:30.
            (
                "Australia/Lord_Howe",
                "15 2 * * *",
                "2026-10-03T12:00:00+00:00",
                ["2026-10-04T02:30:00+11:00", "2026-10-05T02:15:00+11:00"],
            ),
            (
                "Australia/Lord_Howe",
                "*/15 * * * *",
                "2026-10-03T14:50:00+00:00",
                [
                    "2026-10-04T01:30:00+10:30",
                    "2026-10-04T01:45:00+10:30",
                    "2026-10-04T02:30:00+11:00",
                    "2026-10-04T02:45:00+11:00",
                ],
            ),
            (
                "Australia/Lord_Howe",
                "*/15 * * * *",
                "2026-04-04T14:00:00+00:00",
                [
                    "2026-04-05T01:15:00+11:00",
                    "2026-04-05T01:30:00+11:00",
                    "2026-04-05T01:45:00+11:00",
                    "2026-04-05T01:30:00+10:30",
                    "2026-04-05T01:45:00+10:30",
                    "2026-04-05T02:00:00+10:30",
                ],
            ),
            (
                "Australia/Lord_Howe",
                "45 1 * * *",
                "2026-04-04T12:00:00+00:00",
                ["2026-04-05T01:45:00+11:00", "2026-04-06T01:45:00+10:30"],
            ),
            (  # cronsim misses the second 01:45 here
                "Australia/Lord_Howe",
                "45 * * * *",
                "2026-04-04T13:00:00+00:00",
                [
                    "2026-04-05T00:45:00+11:00",
                    "2026-04-05T01:45:00+11:00",
                    "2026-04-05T01:45:00+10:30",
                    "2026-04-05T02:45:00+10:30",
                ],
            ),
            (
                "Australia/Lord_Howe",
                "0 * * * *",
                "2026-10-03T13:30:00+00:00",
                ["2026-10-04T01:00:00+10:30", "2026-10-04T03:00:00+11:00"],
            ),
            # Santiago changes at midnight: 2026-04-05 00:00 -> 04-04 23:00,
            # 2026-09-06 00:00 -> 01:00.
            (
                "America/Santiago",
                "0 0 * * *",
                "2026-09-05T12:00:00+00:00",
                ["2026-09-06T01:00:00-03:00", "2026-09-07T00:00:00-03:00"],
            ),
            (
                "America/Santiago",
                "0 0 * * *",
                "2026-04-04T12:00:00+00:00",
                ["2026-04-05T00:00:00-04:00", "2026-04-06T00:00:00-04:00"],
            ),
            (
                "America/Santiago",
                "30 23 * * *",
                "2026-04-04T12:00:00+00:00",
                ["2026-04-04T23:30:00-03:00", "2026-04-05T23:30:00-04:00"],
            ),
            (
                "America/Santiago",
                "*/30 * * * *",
                "2026-04-05T01:10:00+00:00",
                [
                    "2026-04-04T22:30:00-03:00",
                    "2026-04-04T23:00:00-03:00",
                    "2026-04-04T23:30:00-03:00",
                    "2026-04-04T23:00:00-04:00",
                    "2026-04-04T23:30:00-04:00",
                    "2026-04-05T00:00:00-04:00",
                ],
            ),
            (
                "America/Santiago",
                "*/30 * * * *",
                "2026-09-06T03:10:00+00:00",
                [
                    "2026-09-05T23:30:00-04:00",
                    "2026-09-06T01:00:00-03:00",
                    "2026-09-06T01:30:00-03:00",
                ],
            ),
            (
                "America/Santiago",
                "0 * 6 9 *",
                "2026-09-01T00:00:00+00:00",
                ["2026-09-06T01:00:00-03:00", "2026-09-06T02:00:00-03:00"],
            ),
            (  # Sunday 00:30 is skipped; the fixed-time job runs at the jump
                "America/Santiago",
                "30 0 * * 0",
                "2026-09-01T00:00:00+00:00",
                ["2026-09-06T01:00:00-03:00", "2026-09-13T00:30:00-03:00"],
            ),
            (
                "America/Santiago",
                "* 0 * * *",
                "2026-09-06T03:00:00+00:00",
                ["2026-09-07T00:00:00-03:00"],
            ),
        ],
    )
    def test_transitions(self, zone: str, expr: str, after: str, expected: list[str]) -> None:
        tz = ZoneInfo(zone)
        got = CronExpression(expr).next_fire_times(len(expected), at(after), tz)
        assert [dt.isoformat() for dt in got] == expected
        assert all(dt.tzinfo is tz for dt in got)

    @pytest.mark.parametrize(
        ("zone", "day", "expr", "count"),
        [
            ("America/New_York", "2026-11-01", "*/30 * * * *", 50),
            ("America/New_York", "2026-11-01", "0,30 0-23 * * *", 48),
            ("America/New_York", "2026-11-01", "30 1 * * *", 1),
            ("America/New_York", "2026-03-08", "*/30 * * * *", 46),
            ("America/New_York", "2026-03-08", "30 2 * * *", 1),
            ("America/New_York", "2026-03-08", "* 2 * * *", 0),
            ("Australia/Lord_Howe", "2026-04-05", "*/10 * * * *", 147),
            ("Australia/Lord_Howe", "2026-10-04", "*/10 * * * *", 141),
            ("America/Santiago", "2026-04-04", "0 * * * *", 25),
            ("America/Santiago", "2026-09-06", "0 * * * *", 23),
        ],
    )
    def test_fires_per_local_day(self, zone: str, day: str, expr: str, count: int) -> None:
        tz = ZoneInfo(zone)
        start = datetime.fromisoformat(day).replace(tzinfo=tz) - timedelta(days=1)
        times = CronExpression(expr).next_fire_times(400, start, tz)
        assert sum(dt.date().isoformat() == day for dt in times) == count

    @pytest.mark.parametrize(
        "zone",
        ["America/New_York", "Europe/Riga", "Australia/Lord_Howe", "America/Santiago", "UTC"],
    )
    @pytest.mark.parametrize(
        "expr", ["* * * * *", "*/20 * * * *", "0-59/20 0-3,23 * * *", "30 0-2 * * *"]
    )
    def test_strictly_increasing_and_round_trips(self, zone: str, expr: str) -> None:
        tz = ZoneInfo(zone)
        cron = CronExpression(expr)
        for start in ("2026-04-03T12:00:00+00:00", "2026-09-04T12:00:00+00:00"):
            prev = at(start)
            for dt in cron.next_fire_times(4 * 24 * 60 if expr == "* * * * *" else 300, prev, tz):
                assert dt.timestamp() > prev.timestamp()
                back = dt.astimezone(UTC).astimezone(tz)
                assert (back.replace(tzinfo=None), back.fold) == (dt.replace(tzinfo=None), dt.fold)
                assert back.utcoffset() == dt.utcoffset()
                prev = dt


class TestDescribe:
    @pytest.mark.parametrize(
        ("expr", "text"),
        [
            ("* * * * *", "Every minute"),
            ("@every_minute", "Every minute"),
            ("*/15 * * * *", "Every 15 minutes"),
            ("*/7 * * * *", "Every 7th minute"),
            ("1-59/7 * * * *", "Every 7th minute from 1 through 57"),
            ("0 * * * *", "At minute 0 past every hour"),
            ("@hourly", "At minute 0 past every hour"),
            ("7 * * * *", "At minute 7 past every hour"),
            ("0,1 * * * *", "At minutes 0 and 1 past every hour"),
            ("0 */2 * * *", "At minute 0 past every 2nd hour"),
            ("*/5 */2 * * *", "Every 5 minutes past every 2nd hour"),
            ("* 9 * * *", "Every minute past hour 9"),
            ("0-29 9 * * *", "Every minute from 0 through 29 past hour 9"),
            ("0,30 9-17 * * *", "At minutes 0 and 30 past every hour from 9 through 17"),
            ("0 9 * * 1-5", "At 09:00, Monday through Friday"),
            ("0 9 * * mon-fri", "At 09:00, Monday through Friday"),
            ("0 9,17 * * *", "At 09:00 and 17:00"),
            ("0,30 9,17 * * *", "At 09:00, 09:30, 17:00 and 17:30"),
            ("0 1-5/2 * * *", "At 01:00, 03:00 and 05:00"),
            ("15 10 * * sat,sun", "At 10:15 on Saturday and Sunday"),
            ("0 0 * * 5-7", "At 00:00, Friday through Sunday"),
            ("0 12 * * 1,3,5", "At 12:00 on Monday, Wednesday and Friday"),
            ("@weekly", "At 00:00 on Sunday"),
            ("@daily", "At 00:00"),
            ("0 0 1 * *", "At 00:00 on day 1 of the month"),
            ("@monthly", "At 00:00 on day 1 of the month"),
            ("0 0 29 2 *", "At 00:00 on day 29 of February"),
            ("@yearly", "At 00:00 on day 1 of January"),
            ("0 0 1,15 * *", "At 00:00 on days 1 and 15 of the month"),
            ("0 0 */2 * *", "At 00:00 on every 2nd day of the month"),
            ("0 0 10-20/5 * *", "At 00:00 on every 5th day from 10 through 20 of the month"),
            ("0 0 1 */3 *", "At 00:00 on day 1 of January, April, July and October"),
            ("0 0 * 1-3 *", "At 00:00 in January through March"),
            ("0 0 * 6 1-5", "At 00:00, Monday through Friday, in June"),
            ("0 0 13 * fri", "At 00:00 on day 13 of the month or on Friday"),
            ("0 0 1-31 * 1", "At 00:00"),
            ("0 0 * * 0-7", "At 00:00"),
            ("0 0 1-7 * 1", "At 00:00 on days 1 through 7 of the month or on Monday"),
            ("0 0 */2 * 5", "At 00:00 on every 2nd day of the month, if it is a Friday"),
            ("0 0 13 * */5", "At 00:00 on day 13 of the month, if it is Friday or Sunday"),
            (
                "*/7 3-20/3 1,15 * mon-fri",
                "Every 7th minute past every 3rd hour from 3 through 18 "
                "on days 1 and 15 of the month or on Monday through Friday",
            ),
        ],
    )
    def test_describe(self, expr: str, text: str) -> None:
        assert CronExpression(expr).describe() == text

    def test_describe_is_deterministic_for_equal_expressions(self) -> None:
        assert (
            CronExpression("0 9 * * MON-FRI").describe() == CronExpression("0 9 * * 1-5").describe()
        )
