"""Every code sample in README.md and docs/*.md runs, so none can rot.

How samples are checked, for whoever writes a page:

* Every ```python block runs. The blocks of one page run in order, in one namespace, in a
  fresh Python process whose working directory is an empty temporary directory (the
  repository root is on ``sys.path``). A later block can use what an earlier one defined.
  Use ``assert`` to show results: a sample that states a result should check it.
* ``__name__`` is ``"__docs__"`` there, so code under ``if __name__ == "__main__":``
  (serving the app with uvicorn, say) is shown but not run.
* A line ``--8<-- "examples/x.py"`` inside a block is replaced by that file, as the docs
  site does (pymdownx.snippets), so a sample can live in ``examples/`` and still be run.
* Samples must be self-contained and quick: to see jobs run, start the app with
  ``with TestClient(app):`` or ``asyncio.run(...)`` and wait for a condition rather than a
  fixed time; there is no marker to skip a block. Text that is not runnable Python
  (signatures, tracebacks, pseudo-code) goes in a ```text block.
* In a ```console block, a line ``$ nexios-scheduler ARGS`` followed by output lines is run
  (in a terminal 100 columns wide) and its output must match exactly. A ``$`` line with no
  output below it (``nexios-scheduler demo`` serves until stopped) is shown, not run.
  ```bash blocks are instructions for the reader and are not run.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")
SNIPPET = re.compile(r"""^\s*--8<--\s+["']?(?P<path>[^"'\s]+)["']?\s*$""")
TIMEOUT = 180

RUNNER = """
import json, sys
blocks = json.load(open(sys.argv[1]))
namespace = {"__name__": "__docs__"}
for block in blocks:
    code = "\\n" * (block["line"] - 1) + block["code"]
    exec(compile(code, block["file"], "exec"), namespace)
"""


@dataclass
class Block:
    page: Path
    line: int  # line of the first code line, 1-based
    lang: str
    code: str

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def blocks_of(page: Path) -> list[Block]:
    """The fenced code blocks of a Markdown page, with snippet includes expanded."""
    blocks: list[Block] = []
    lines = page.read_text(encoding="utf-8").splitlines()
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence, indent = opening["fence"], len(opening["indent"])
        lang = opening["info"].strip().split(" ")[0].lstrip(".").lower()
        body: list[str] = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].isspace() else lines[i])
            i += 1
        start = i - len(body) + 1
        i += 1
        code = []
        for line in body:
            include = SNIPPET.match(line)
            if include:
                path = ROOT / include["path"]
                assert path.is_file(), f"{page.name}: snippet {include['path']} not found"
                code.append(path.read_text(encoding="utf-8").rstrip("\n"))
            else:
                code.append(line)
        blocks.append(Block(page, start, lang, "\n".join(code) + "\n"))
    return blocks


def python_blocks(page: Path) -> list[Block]:
    return [b for b in blocks_of(page) if b.lang in ("python", "py", "python3")]


def run_page(page: Path) -> subprocess.CompletedProcess[str]:
    blocks = python_blocks(page)
    with tempfile.TemporaryDirectory(prefix="docs-") as tmp:
        spec = Path(tmp) / "blocks.json"
        spec.write_text(
            json.dumps([{"file": str(b.page), "line": b.line, "code": b.code} for b in blocks])
        )
        work = Path(tmp) / "work"
        work.mkdir()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(work)])}
        return subprocess.run(
            [sys.executable, "-c", RUNNER, str(spec)],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )


PAGES_WITH_PYTHON = [p for p in PAGES if python_blocks(p)]


@pytest.fixture(scope="module")
def page_results() -> dict[Path, subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(PAGES_WITH_PYTHON, pool.map(run_page, PAGES_WITH_PYTHON)))


@pytest.mark.parametrize("page", PAGES_WITH_PYTHON, ids=lambda p: p.name)
def test_python_samples_run(page, page_results):
    result = page_results[page]
    assert result.returncode == 0, (
        f"a sample in {page.relative_to(ROOT)} failed:\n{result.stderr[-4000:]}"
    )


def console_commands(page: Path) -> list[tuple[Block, list[str], str]]:
    """(block, argv, expected output) for each checked command of the page."""
    found = []
    for block in blocks_of(page):
        if block.lang != "console":
            continue
        lines = block.code.rstrip("\n").split("\n")
        i = 0
        while i < len(lines):
            if not lines[i].startswith("$ "):
                i += 1
                continue
            command = shlex.split(lines[i][2:])
            j = i + 1
            while j < len(lines) and not lines[j].startswith("$ "):
                j += 1
            output = "\n".join(lines[i + 1 : j])
            if command[:1] == ["nexios-scheduler"] and output.strip():
                found.append((block, command[1:], output))
            i = j
    return found


CONSOLE = [(p, c) for p in PAGES for c in console_commands(p)]


@pytest.mark.parametrize(
    "page, command",
    CONSOLE,
    ids=[f"{p.name}:{' '.join(c[1])[:40]}" for p, c in CONSOLE],
)
def test_console_samples_print_what_they_show(page, command, capsys, monkeypatch):
    from nexios_contrib_scheduler.cli import main

    block, argv, expected = command
    monkeypatch.setenv("COLUMNS", "100")
    monkeypatch.chdir(ROOT)
    main(argv)
    out, err = capsys.readouterr()
    assert (out + err).rstrip("\n") == expected.rstrip("\n"), f"at {block.where}"


def test_the_convention_finds_samples():
    assert len(PAGES_WITH_PYTHON) >= 5
    assert CONSOLE, "no checked nexios-scheduler command in the docs"
    fence_count = sum(len(blocks_of(p)) for p in PAGES)
    assert fence_count > len(PAGES_WITH_PYTHON)


def test_snippets_are_expanded():
    (block,) = [b for b in python_blocks(ROOT / "docs" / "index.md") if "setup_scheduler" in b.code]
    assert "--8<--" not in block.code
    assert block.code.startswith((ROOT / "examples" / "quickstart.py").read_text()[:40])


# ---------------------------------------------------------------- the site's structure


def nav_pages() -> list[str]:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return re.findall(r"^\s*- [^:\n]+:\s*(\S+\.md)\s*$", text, flags=re.MULTILINE)


def test_every_page_is_in_the_nav_and_every_nav_entry_exists():
    on_disk = {p.name for p in (ROOT / "docs").glob("*.md")}
    in_nav = nav_pages()
    assert sorted(in_nav) == sorted(set(in_nav)), "a page is listed twice"
    assert set(in_nav) == on_disk


def test_configuration_page_names_every_option():
    import dataclasses

    from nexios_contrib_scheduler import SchedulerConfig
    from nexios_contrib_scheduler.config import DEFAULT_JOB_DEFAULTS

    page = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    options = [f.name for f in dataclasses.fields(SchedulerConfig)]
    missing = [name for name in [*options, *DEFAULT_JOB_DEFAULTS] if f"`{name}`" not in page]
    assert missing == [], f"docs/configuration.md does not describe {missing}"


def test_api_page_covers_the_public_api():
    import nexios_contrib_scheduler

    page = (ROOT / "docs" / "api.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^::: nexios_contrib_scheduler\.(\w+)\s*$", page, re.MULTILINE))
    public = set(nexios_contrib_scheduler.__all__) - {"__version__"}
    assert sorted(public - documented) == [], "add these to docs/api.md"
