"""The benchmark harness keeps working: ``python -m bench --quick`` prints the whole table.

The figures themselves are not checked (they depend on the machine); what is checked is
that every workload ran for every system installed and that the jobs all fired.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_quick_run_prints_the_table(tmp_path):
    raw = tmp_path / "runs.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--json", str(raw)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    systems = ["this", "apscheduler"]
    header = "| Workload / figure | this package | ÷ APS | APScheduler 3 (raw) |"
    if importlib.util.find_spec("nexios_contrib") is not None:
        systems.append("nexios_contrib")
        header += " nexios_contrib 0.5 | ÷ APS |"
    assert header in out
    for section in ("**Burst:", "**Scale:", "**Steady load:", "**Cron:", "**Requests:"):
        assert section in out
    assert "Targets (this package):" in out
    runs = json.loads(raw.read_text())["runs"]
    for workload in ("burst", "scale", "memory", "cron", "requests"):
        assert sorted(runs[workload]) == sorted(
            systems + (["none"] if workload == "requests" else [])
        ), workload
    plan_jobs = 300
    for system in systems:
        (burst,) = runs["burst"][system]
        assert burst["fires"] == plan_jobs, system
        (scale,) = runs["scale"][system]
        assert scale["few_fires"] > 0 and scale["many_fires"] > 0, system
        assert scale["adds_per_s"] > 0 and runs["memory"][system][0]["bytes_per_job"] > 0
        (cron,) = runs["cron"][system]
        assert isinstance(cron["@yearly | UTC"], float), system
    for system in ("none", *systems):
        (req,) = runs["requests"][system]
        assert req["requests"] > 0 and req["errors"] == 0, system
