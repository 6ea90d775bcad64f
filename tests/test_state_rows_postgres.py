"""PostgreSQL's state rows are written a page at a time as one ``bytea`` of every row's job
id, field name and value, with their lengths; the server cuts the rows out. Against the
real server: whatever goes in comes back byte for byte, across pages, for any job id."""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
from mw_services import opened_state, postgres_url

from nexios_contrib_scheduler.stores import state as state_module
from nexios_contrib_scheduler.stores.state import SqlState

#: Job ids a byte-and-length encoding could get wrong: separators of the lengths, quotes,
#: backslashes, characters of two to four bytes in UTF-8, an empty id, a long one.
AWKWARD_IDS = [
    "plain",
    "with,comma",
    "1,2,3",
    'quote\'d "twice"',
    "back\\slash\\x00",
    "tab\tand\nnewline",
    "é ü ß",
    "日本語のジョブ",
    "emoji 🚀🛰",
    "",
    "x" * 191,  # the longest the id columns take (as APScheduler's jobs table)
]


@pytest.fixture
def postgres_state() -> Iterator[SqlState]:
    with opened_state(postgres_url()) as (backend, _):
        assert isinstance(backend, SqlState)
        yield backend


def _fields(rng: random.Random, size: int) -> dict[str, bytes]:
    return {
        "status": b"",  # an empty value
        "name": "naïve, \u2603".encode(),
        "history": bytes(rng.getrandbits(8) for _ in range(size)),  # every byte value
        "zeros": b"\x00" * 7,
    }


def test_awkward_job_ids_and_values_come_back_byte_for_byte(postgres_state):
    rng = random.Random(7)
    jobs = {job_id: _fields(rng, rng.randrange(0, 300)) for job_id in AWKWARD_IDS}
    jobs["big"] = {"history": bytes(rng.getrandbits(8) for _ in range(200_000))}
    postgres_state.write_ops(jobs, {}, {})
    assert postgres_state.load_all() == jobs
    for job_id, fields in jobs.items():
        assert postgres_state.load(job_id) == fields


def test_many_pages_in_one_write(postgres_state, monkeypatch):
    monkeypatch.setattr(state_module, "ROWS_PER_STATEMENT", 7)  # pages end mid-job
    jobs = {
        f"job-{i}": {f"f{k}": f"{i}:{k}".encode() * (k + 1) for k in range(5)} for i in range(40)
    }
    postgres_state.write_ops(jobs, {}, {})
    assert postgres_state.load_all() == jobs


def test_changes_replace_fields_only_of_jobs_still_stored(postgres_state):
    postgres_state.write_ops({"a,1": {"x": b"1", "y": b"2"}, "b": {"x": b"3"}}, {}, {})
    changed = postgres_state.update("a,1", {"y": b"two", "z": b"new"})
    assert changed
    # A change of a job removed meanwhile writes nothing for it; the others' go in.
    postgres_state.write_ops({}, {"gone": {"x": b"9"}, "b": {"x": b"three"}}, {})
    assert postgres_state.load_all() == {
        "a,1": {"x": b"1", "y": b"two", "z": b"new"},
        "b": {"x": b"three"},
    }
    assert not postgres_state.update("gone", {"x": b"9"})
    assert postgres_state.load("gone") is None
