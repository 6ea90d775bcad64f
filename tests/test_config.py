from __future__ import annotations

import logging
from datetime import timezone
from zoneinfo import ZoneInfo

import pytest

from nexios_contrib_scheduler import JobStatus, SchedulerConfig


class TestDefaults:
    def test_documented_defaults(self):
        config = SchedulerConfig()
        assert config.timezone == "UTC"
        assert config.tzinfo is timezone.utc
        assert config.max_concurrent_jobs == 10
        assert config.log_level is None  # the package's logger keeps the app's level
        assert config.job_defaults == {
            "max_instances": 3,
            "misfire_grace_time": 30,
            "coalesce": True,
            "timeout": None,
            "pause_on_failure": False,
        }
        assert config.shutdown_timeout == 30.0

    def test_partial_job_defaults_merge_over_builtins(self):
        config = SchedulerConfig(job_defaults={"coalesce": False})
        assert config.job_defaults == {
            "max_instances": 3,
            "misfire_grace_time": 30,
            "coalesce": False,
            "timeout": None,
            "pause_on_failure": False,
        }

    def test_none_grace_in_defaults_means_run_however_late(self):
        config = SchedulerConfig(job_defaults={"misfire_grace_time": None})
        assert config.job_defaults["misfire_grace_time"] is None


class TestTimezone:
    def test_iana_name(self):
        assert SchedulerConfig(timezone="Europe/Riga").tzinfo == ZoneInfo("Europe/Riga")

    def test_local_uses_tzlocal(self):
        import tzlocal

        assert SchedulerConfig(timezone="local").tzinfo == tzlocal.get_localzone()

    def test_unknown_zone_raises_when_created(self):
        with pytest.raises(ValueError, match="unknown timezone 'Mars/Olympus'"):
            SchedulerConfig(timezone="Mars/Olympus")

    def test_tzinfo_object_accepted(self):
        tz = ZoneInfo("Asia/Tokyo")
        assert SchedulerConfig(timezone=tz).tzinfo is tz


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            ({"max_concurrent_jobs": 0}, ValueError, "max_concurrent_jobs must be at least 1"),
            ({"max_concurrent_jobs": "4"}, TypeError, "max_concurrent_jobs must be an int"),
            ({"shutdown_timeout": -1}, ValueError, "shutdown_timeout"),
            ({"job_defaults": {"max_instance": 2}}, ValueError, "unknown job_defaults key"),
            ({"job_defaults": {"misfire_grace_time": 0}}, ValueError, "positive"),
            ({"job_defaults": {"misfire_grace_time": -5}}, ValueError, "positive"),
            ({"job_defaults": {"max_instances": 0}}, ValueError, "at least 1"),
            ({"job_defaults": {"coalesce": "yes"}}, TypeError, "coalesce"),
            ({"log_level": "LOUD"}, ValueError, "unknown log_level"),
            ({"history_size": -1}, ValueError, "history_size"),
        ],
    )
    def test_bad_values_are_refused(self, kwargs, error, match):
        with pytest.raises(error, match=match):
            SchedulerConfig(**kwargs)

    def test_log_level_by_name(self):
        assert SchedulerConfig(log_level="debug").log_level == logging.DEBUG


class TestJobStatus:
    def test_values_are_upper_case_names(self):
        assert [s.value for s in JobStatus] == [
            "ACTIVE",
            "PAUSED",
            "COMPLETED",
            "FAILED",
            "CANCELLED",
        ]

    def test_is_a_str(self):
        assert JobStatus.ACTIVE == "ACTIVE"
        assert isinstance(JobStatus.PAUSED, str)
