"""Differential test of ``nexios_contrib_scheduler.cron`` against cronsim.

cronsim implements Debian's cron rules (day rule, DST rule), so for the common dialect
both must agree on every fire time. Expressions are generated from a fixed seed and cover
every field form: values, ``*``, ranges, steps on ``*`` and on ranges, lists mixing them,
month and weekday names in mixed case, ``7`` for Sunday, both day-rule cases and ``*/n``
in a day field. Each is checked for the next five fire times in UTC, Europe/Riga,
America/New_York and Australia/Sydney, from a start a few hours before one of the zone's
2026/2027 clock changes or from a random instant.

Known departures, kept out of the comparison and covered by tests/test_cron.py instead:

* ``a/n`` is rejected (Debian); cronsim reads it as ``a-max/n``. Never generated.
* ``a-a/n`` means just ``a`` (Debian); cronsim reads it as ``a-max/n``. Never generated.
* A start instant inside the second pass of a repeated hour: cronsim restarts fixed-time
  jobs from the wall time and can return a time before the start. Such starts are redrawn.
* Australia/Lord_Howe (30-minute shift) and America/Santiago (changes at midnight):
  cronsim drops some wildcard fires there, so those zones are not compared.
* cronsim gives up after 50 years without a match; such cases are checked only for ours
  being that far away.
"""

from __future__ import annotations

import random
import time
from datetime import datetime, timedelta, timezone, tzinfo
from itertools import islice
from zoneinfo import ZoneInfo

import pytest

from nexios_contrib_scheduler.cron import ALIASES, CronExpression, CronSyntaxError

cronsim = pytest.importorskip("cronsim")

SEED = 20260329
N_EXPRESSIONS = 5000
N_FIRES = 5
ZONES: list[tzinfo] = [
    timezone.utc,
    ZoneInfo("Europe/Riga"),
    ZoneInfo("America/New_York"),
    ZoneInfo("Australia/Sydney"),
]
SPAN_START = datetime(2026, 1, 1, tzinfo=timezone.utc)
SPAN_END = datetime(2028, 1, 1, tzinfo=timezone.utc)

FIELDS = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
NAMES = {
    3: ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"],
    4: ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"],
}


def transitions(tz: tzinfo) -> list[datetime]:
    """UTC instants in 2026-2027 where the zone's offset changes (to the hour)."""
    found = []
    t = SPAN_START
    prev = t.astimezone(tz).utcoffset()
    while t < SPAN_END:
        t += timedelta(hours=1)
        off = t.astimezone(tz).utcoffset()
        if off != prev:
            found.append(t)
        prev = off
    return found


def mixed_case(rng: random.Random, word: str) -> str:
    return "".join(c.lower() if rng.random() < 0.5 else c for c in word)


def token(rng: random.Random, field: int, v: int) -> str:
    names = NAMES.get(field)
    if names and v < len(names) + FIELDS[field][0] and rng.random() < 0.35:
        return mixed_case(rng, names[v - FIELDS[field][0]])
    return str(v)


def item(rng: random.Random, field: int, lo: int, hi: int) -> str:
    kind = rng.choices(["value", "range", "star_step", "range_step"], [4, 3, 2, 2])[0]
    if kind == "value":
        return token(rng, field, rng.randint(lo, hi))
    if kind == "star_step":
        return f"*/{rng.randint(1, hi - lo + 3)}"
    a = rng.randint(lo, hi - 1)
    b = rng.randint(a + 1, hi) if kind == "range_step" or rng.random() < 0.9 else a
    text = f"{token(rng, field, a)}-{token(rng, field, b)}"
    if kind == "range_step":
        text += f"/{rng.randint(1, b - a + 2)}"
    return text


def field_text(rng: random.Random, field: int, star_weight: float) -> str:
    lo, hi = FIELDS[field]
    if rng.random() < star_weight:
        return "*"
    return ",".join(item(rng, field, lo, hi) for _ in range(rng.choice([1, 1, 1, 2, 3])))


def near_clock_change_hours(rng: random.Random) -> str:
    """Hour fields around the 01:00-04:00 local clock changes of the compared zones."""
    a = rng.randint(0, 3)
    b = rng.randint(a + 1, 5)
    return rng.choice([str(rng.randint(1, 4)), f"{a}-{b}", f"{a}-{b}/2", f"1,{b}", "*/2", "*"])


def expression(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.02:
        return rng.choice(sorted(ALIASES))
    if roll < 0.35:
        minute = field_text(rng, 0, 0.2)
        dom = rng.choice(["*", "*", "*/2", field_text(rng, 2, 0.0)])
        dow = rng.choice(["*", "*", "0", "7", "sun", "SAT,Sun", field_text(rng, 4, 0.0)])
        return f"{minute} {near_clock_change_hours(rng)} {dom} * {dow}"
    return " ".join(field_text(rng, f, w) for f, w in enumerate([0.25, 0.3, 0.5, 0.6, 0.5]))


def start_for(rng: random.Random, tz: tzinfo, changes: list[datetime]) -> datetime:
    while True:
        if changes and rng.random() < 0.6:
            base = rng.choice(changes) - timedelta(hours=rng.uniform(0, 6))
        else:
            base = SPAN_START + (SPAN_END - SPAN_START) * rng.random()
        start = base.astimezone(tz)
        if start.fold == 0:
            return start


def oracle(expr: str, start: datetime) -> tuple[list[datetime], bool]:
    """cronsim's next fire times and whether it ran out (50-year limit)."""
    text = ALIASES.get(expr, expr)
    out = list(islice(cronsim.CronSim(text, start), N_FIRES))
    return out, len(out) < N_FIRES


def test_generated_expressions_match_cronsim() -> None:
    rng = random.Random(SEED)
    changes = {id(tz): transitions(tz) for tz in ZONES}
    expressions = compared = rejected = gave_up = near_change = 0
    mismatches: list[str] = []
    began = time.perf_counter()
    while expressions < N_EXPRESSIONS:
        expr = expression(rng)
        try:
            ours = CronExpression(expr)
        except CronSyntaxError:
            # Must be an expression cronsim refuses too (a day that never occurs).
            with pytest.raises(cronsim.CronSimError):
                cronsim.CronSim(expr, SPAN_START)
            rejected += 1
            continue
        expressions += 1
        for tz in ZONES:
            start = start_for(rng, tz, changes[id(tz)])
            theirs, ran_out = oracle(expr, start)
            mine = ours.next_fire_times(len(theirs), start, tz)
            if ran_out:
                gave_up += 1
                last = mine[-1] if mine else start
                beyond = ours.next_after(last, tz)
                if beyond - start < timedelta(days=49 * 365):
                    mismatches.append(f"{expr!r} {tz} from {start}: cronsim stopped, ours {beyond}")
            for a, b in zip(mine, theirs):
                compared += 1
                if any(abs(a - c) < timedelta(hours=3) for c in changes[id(tz)]):
                    near_change += 1
                # Same-zone datetimes compare ignoring fold, so compare the real instants.
                if a.timestamp() != b.timestamp() or a.utcoffset() != b.utcoffset():
                    mismatches.append(f"{expr!r} {tz} from {start}: ours {mine} cronsim {theirs}")
                    break
    summary = (
        f"cron differential: {expressions} expressions x {len(ZONES)} zones, "
        f"{compared} fire times compared ({near_change} within 3 h of a clock change), "
        f"{rejected} rejected by both, {gave_up} past cronsim's 50-year limit, "
        f"{len(mismatches)} mismatches, {time.perf_counter() - began:.1f} s"
    )
    print(summary)
    assert compared >= N_EXPRESSIONS * N_FIRES * len(ZONES) * 0.99
    assert near_change > 1000
    assert not mismatches, summary + "\n" + "\n".join(mismatches[:20])
