"""The private parts of APScheduler this package relies on, checked against the installed release.

APScheduler 3 gives no promise about its private names (one leading underscore), yet the
adapter overrides some of its private methods and reads some of its private attributes. The
pin in pyproject.toml (``apscheduler>=3.11,<3.12``) keeps releases that may change them out;
this test is what tells whoever moves the pin what broke:

* ``RELIANCES`` lists every private APScheduler name the package relies on, where it lives,
  what kind of thing it is, the parameter names the package relies on for methods, and why
  the package needs it. Each is checked against the installed APScheduler.
* The package's source is scanned (``ast``) for the private APScheduler names it uses, so the
  table cannot go stale: a new use of an unlisted name fails, naming the file and line, and a
  listed name no longer used fails too, so the table shrinks with the uses.

What counts as a use of a private APScheduler name (``_x``, one leading underscore, not a
dunder), found by the scan:

* ``obj._x`` (read, write, call, ``getattr(obj, "_x")``) where ``_x`` is a private name some
  APScheduler class or module defines;
* ``self._x`` inside a class deriving from APScheduler where the APScheduler base defines
  ``_x``, and a definition of ``_x`` in such a class's body (an override is a reliance), but
  not ``self._x`` where ``_x`` is the package's own (defined on one of its classes that does
  not derive from APScheduler, or new on one that does);
* ``from apscheduler... import _x``.

Without types the scan cannot tell whose ``obj._x`` is, so another object's private
attribute named like one of APScheduler's counts as a use unless ``NOT_APSCHEDULER`` says
whose it is (the file and the expression, with a reason); an entry that no longer matches a
use fails too.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import apscheduler
import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.version import Version

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "nexios_contrib_scheduler"
PACKAGE_DIR = ROOT / PACKAGE
PIN = SpecifierSet(">=3.11,<3.12")

# Where APScheduler's private names are looked for: these modules and packages (every
# submodule that imports here), plus every apscheduler module the package imports from.
APSCHEDULER_MODULES = (
    "apscheduler.schedulers.base",
    "apscheduler.schedulers.asyncio",
    "apscheduler.job",
    "apscheduler.jobstores",
    "apscheduler.executors",
    "apscheduler.triggers",
    "apscheduler.util",
)

Kind = Literal["method", "attribute", "function"]


@dataclass(frozen=True)
class Reliance:
    """One private APScheduler name the package relies on."""

    owner: str  # "module:Class" for a class member, "module" for a module-level name
    name: str
    kind: Kind
    why: str
    # For methods and functions: the parameter names (without self/cls) the package relies
    # on, overriding or calling them; None for attributes.
    params: tuple[str, ...] | None = None

    @property
    def label(self) -> str:
        module, _, qualname = self.owner.partition(":")
        return f"{qualname or module}.{self.name}"


_SCHEDULER = "apscheduler.schedulers.base:BaseScheduler"
_ASYNCIO = "apscheduler.schedulers.asyncio:AsyncIOScheduler"
_JOB = "apscheduler.job:Job"
_EXECUTOR = "apscheduler.executors.base:BaseExecutor"
_STORE = "apscheduler.jobstores.base:BaseJobStore"

RELIANCES: tuple[Reliance, ...] = (
    # AdapterScheduler (scheduler.py): overrides
    Reliance(_SCHEDULER, "_process_jobs", "method", "overridden: the scheduling pass, sliced so a burst of due jobs does not stall the loop", ()),
    Reliance(_SCHEDULER, "_real_add_job", "method", "overridden: adding a job wakes the scheduler only when the job is due before the armed timer", ("job", "jobstore_alias", "replace_existing")),
    Reliance(_SCHEDULER, "_create_default_jobstore", "method", "overridden: the default store is HeapJobStore, not the sorted-list MemoryJobStore", ()),
    Reliance(_ASYNCIO, "_start_timer", "method", "overridden: the timer records when it fires and stays off under a frozen clock", ("wait_seconds",)),
    Reliance(_ASYNCIO, "_stop_timer", "method", "overridden: also forgets when the armed timer was due", ()),
    # AdapterScheduler: BaseScheduler's machinery it calls or reads
    Reliance(_SCHEDULER, "_create_trigger", "method", "add_job builds the trigger from its arguments as APScheduler does", ("trigger", "trigger_args")),
    Reliance(_SCHEDULER, "_dispatch_event", "method", "events of a pass are sent to listeners after the burst has started", ("event",)),
    Reliance(_SCHEDULER, "_lookup_jobstore", "method", "the store a job is added to, by alias", ("alias",)),
    Reliance(_SCHEDULER, "_executors", "attribute", "the executors a due job is submitted to; their counts are reset after a closed loop"),
    Reliance(_SCHEDULER, "_jobstores", "attribute", "the stores a pass reads due jobs from"),
    Reliance(_SCHEDULER, "_jobstores_lock", "attribute", "held while the stores are read or changed, as APScheduler does"),
    Reliance(_SCHEDULER, "_pending_jobs", "attribute", "jobs added before start wait there, as in APScheduler"),
    Reliance(_SCHEDULER, "_job_defaults", "attribute", "job options left unset are filled from it when a job is stored"),
    Reliance(_SCHEDULER, "_listeners", "attribute", "which event kinds any listener takes, so unwanted events are not built"),
    Reliance(_SCHEDULER, "_listeners_lock", "attribute", "held while the listeners are read"),
    Reliance(_SCHEDULER, "_logger", "attribute", "the scheduler logs under APScheduler's own logger, as before"),
    Reliance(_ASYNCIO, "_eventloop", "attribute", "the loop the scheduler runs on: wake-ups; a closed loop counts as stopped"),
    Reliance(_ASYNCIO, "_timeout", "attribute", "the armed timer handle, which APScheduler's _stop_timer cancels"),
    # JobExecutor (executor.py)
    Reliance("apscheduler.executors.asyncio:AsyncIOExecutor", "_do_submit_job", "method", "overridden: runs get their scheduled time, the run ledger and the drain on shutdown", ("job", "run_times")),
    Reliance("apscheduler.executors.asyncio:AsyncIOExecutor", "_eventloop", "attribute", "the loop the executor starts runs on"),
    Reliance(_EXECUTOR, "_run_job_success", "method", "gives back the max_instances slot and sends the run's events", ("job_id", "events")),
    Reliance(_EXECUTOR, "_instances", "attribute", "running instances per job: run-now counts against max_instances; cleared after a closed loop"),
    Reliance(_EXECUTOR, "_lock", "attribute", "held while _instances is read or changed"),
    Reliance(_EXECUTOR, "_scheduler", "attribute", "the scheduler the executor belongs to (burst state, listeners)"),
    # Job (built without Job.__init__'s per-job checks, which are cached per function)
    Reliance(_JOB, "_scheduler", "attribute", "set on jobs built by AdapterScheduler._new_job, as Job.__init__ sets it"),
    Reliance(_JOB, "_jobstore_alias", "attribute", "set on new jobs and read for the events of a run"),
    Reliance(_JOB, "_modify", "method", "fills a new job's defaults and first fire time with APScheduler's validation", ("changes",)),
    Reliance(_JOB, "_get_run_times", "method", "the fires merged by coalesce, to count them as missed", ("now",)),
    # The persistent stores (stores/sqlalchemy_store.py, stores/redis_store.py)
    Reliance("apscheduler.jobstores.sqlalchemy:SQLAlchemyJobStore", "_reconstitute_job", "method", "overridden: a job whose function cannot be imported loads (with a stand-in) instead of being deleted; the reloads restore jobs with it, as APScheduler does", ("job_state",)),
    Reliance("apscheduler.jobstores.redis:RedisJobStore", "_reconstitute_job", "method", "overridden: a job whose function cannot be imported loads (with a stand-in) instead of being deleted", ("job_state",)),
)  # fmt: skip

# Uses the scan finds that are not APScheduler's: (file, expression) -> whose it is.
NOT_APSCHEDULER: dict[tuple[str, str], str] = {
    ("nexios_contrib_scheduler/integration.py", "app._shutdown"): "Nexios' app: runs its on_shutdown handlers",
}  # fmt: skip


# ------------------------------------------------------------------ checking one reliance


def installed_version() -> str:
    return str(apscheduler.__version__)


def _resolve(owner: str) -> Any:
    module_name, _, qualname = owner.partition(":")
    target: Any = importlib.import_module(module_name)
    for part in filter(None, qualname.split(".")):
        target = getattr(target, part)
    return target


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__") and len(name) > 1


def _self_assigned(klass: type) -> set[str]:
    """Names a class's own source assigns as ``self.<name>`` (its instance attributes)."""
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):
        return set()
    tree = ast.parse(_dedent(source))
    names: set[str] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            for sub in ast.walk(target):
                if (
                    isinstance(sub, ast.Attribute)
                    and isinstance(sub.value, ast.Name)
                    and sub.value.id == "self"
                ):
                    names.add(sub.attr)
    return names


def _dedent(source: str) -> str:
    lines = source.splitlines()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()), default=0)
    return "\n".join(line[indent:] for line in lines)


def _own_classes(klass: type) -> list[type]:
    """The class and its bases, APScheduler's own only (not object, ABC, ...)."""
    return [base for base in klass.__mro__ if base.__module__.startswith("apscheduler")]


def _parameters(func: Any, bound: bool) -> tuple[str, ...]:
    names = list(inspect.signature(func).parameters)
    return tuple(names[1:] if bound and names else names)


def _member(klass: type, name: str) -> tuple[str, Any] | None:
    """How ``name`` is defined on the class or its bases: ("method", function),
    ("attribute", value) or None."""
    for base in klass.__mro__:
        if name in vars(base):
            value = vars(base)[name]
            if isinstance(value, (staticmethod, classmethod)):
                return "method", value
            if inspect.isfunction(value):
                return "method", value
            return "attribute", value
    for base in _own_classes(klass):
        if name in _self_assigned(base):
            return "attribute", None
    return None


def check(reliance: Reliance) -> str | None:
    """What changed in the installed APScheduler about ``reliance``; None if nothing did."""
    problem = _problem(reliance)
    if problem is None:
        return None
    return f"APScheduler {installed_version()} changed {reliance.label}: {problem}"


def _problem(reliance: Reliance) -> str | None:
    try:
        owner = _resolve(reliance.owner)
    except (ImportError, AttributeError) as exc:
        return f"its owner {reliance.owner} is gone ({exc})"
    if inspect.ismodule(owner):
        if not hasattr(owner, reliance.name):
            return f"module {owner.__name__} no longer defines {reliance.name}"
        value = getattr(owner, reliance.name)
        kind: str = "function" if inspect.isfunction(value) else "attribute"
        bound = False
    else:
        found = _member(owner, reliance.name)
        if found is None:
            return f"{owner.__name__} and its bases no longer define {reliance.name}"
        kind, value = found
        bound = not isinstance(value, staticmethod)
        if isinstance(value, (staticmethod, classmethod)):
            value = value.__func__
    if kind != reliance.kind:
        return f"it is now a {kind}, the package relies on a {reliance.kind}"
    if reliance.params is not None:
        params = _parameters(value, bound)
        if params != reliance.params:
            return (
                f"its parameters are now ({', '.join(params)}); the package relies on "
                f"({', '.join(reliance.params)})"
            )
    return None


# ------------------------------------------------------------------ APScheduler's private names


def _walk_modules(names: Iterable[str]) -> Iterator[ModuleType]:
    for name in names:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue  # a backend whose library is not installed (mongodb, gevent, ...)
        yield module
        for info in pkgutil.walk_packages(getattr(module, "__path__", []), name + "."):
            try:
                yield importlib.import_module(info.name)
            except ImportError:
                continue


def apscheduler_private_names(extra_modules: Iterable[str] = ()) -> dict[str, set[str]]:
    """Every private name APScheduler's modules and classes define -> where it is defined."""
    where: dict[str, set[str]] = {}
    classes: set[type] = set()
    for module in _walk_modules([*APSCHEDULER_MODULES, *extra_modules]):
        for name, value in vars(module).items():
            if _is_private(name):
                where.setdefault(name, set()).add(module.__name__)
            if inspect.isclass(value) and value.__module__.startswith("apscheduler"):
                classes.update(_own_classes(value))
    for klass in classes:
        for name in {*vars(klass), *_self_assigned(klass)}:
            if _is_private(name):
                where.setdefault(name, set()).add(klass.__qualname__)
    return where


# ------------------------------------------------------------------ the package's uses


@dataclass(frozen=True)
class Use:
    name: str
    where: str  # "path:line"
    path: str
    expr: str  # the source of the use: "executor._lock", "def _process_jobs", ...


@dataclass
class _Class:
    node: ast.ClassDef
    aps_bases: list[type]  # APScheduler classes among its bases' MROs
    defines: set[str] = field(default_factory=set)  # private names it defines itself

    def aps_defines(self, name: str) -> bool:
        return any(_member(base, name) is not None for base in self.aps_bases)


@dataclass
class _Module:
    path: Path
    tree: ast.Module
    name: str


def _package_modules(package_dir: Path) -> list[_Module]:
    modules = []
    for path in sorted(package_dir.rglob("*.py")):
        relative = path.relative_to(package_dir.parent).with_suffix("")
        name = ".".join(relative.parts)
        name = name.removesuffix(".__init__")
        modules.append(_Module(path, ast.parse(path.read_text(), str(path)), name))
    return modules


def _apscheduler_imports(modules: list[_Module]) -> set[str]:
    found = set()
    for module in modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("apscheduler"):
                found.add(str(node.module))
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name.startswith("apscheduler"))
    return found


def _runtime_bases(module: _Module, node: ast.ClassDef) -> list[type]:
    """The APScheduler classes a package class derives from, found by importing its module."""
    if not node.bases:
        return []
    namespace: Any = importlib.import_module(module.name)
    found: list[type] = []
    for base in node.bases:
        try:
            value = eval(compile(ast.Expression(base), module.name, "eval"), vars(namespace))
        except Exception:
            continue
        if inspect.isclass(value):
            found.extend(_own_classes(value))
    return found


def _self_names(cls_node: ast.ClassDef) -> set[str]:
    names: set[str] = set()
    for stmt in cls_node.body:
        if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(stmt.name)
        elif isinstance(stmt, ast.Assign):
            names.update(t.id for t in stmt.targets if isinstance(t, ast.Name))
        elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            names.add(stmt.target.id)
    for node in ast.walk(cls_node):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id in ("self", "cls")
            ):
                names.add(target.attr)
    return {name for name in names if _is_private(name)}


class _Scanner(ast.NodeVisitor):
    def __init__(
        self, module: _Module, root: Path, classes: dict[int, _Class], aps: set[str],
        own: set[str],
    ) -> None:  # fmt: skip
        self.module, self.root, self.classes, self.aps, self.own = module, root, classes, aps, own
        self.uses: list[Use] = []
        self.stack: list[_Class] = []

    def _add(self, name: str, node: ast.AST, expr: str) -> None:
        path = self.module.path.relative_to(self.root).as_posix()
        self.uses.append(Use(name, f"{path}:{getattr(node, 'lineno', 0)}", path, expr))

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        info = self.classes[id(node)]
        for stmt in node.body:
            names: list[str] = []
            if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
                names = [stmt.name]
            elif isinstance(stmt, ast.Assign):
                names = [t.id for t in stmt.targets if isinstance(t, ast.Name)]
            elif isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                names = [stmt.target.id]
            for name in names:
                if _is_private(name) and info.aps_defines(name):
                    self._add(name, stmt, f"def {name}")  # an override of APScheduler's
        self.stack.append(info)
        self.generic_visit(node)
        self.stack.pop()

    def _attribute(self, receiver: ast.expr, name: str, node: ast.AST) -> None:
        if not _is_private(name) or name not in self.aps:
            return
        if self.stack and isinstance(receiver, ast.Name) and receiver.id in ("self", "cls"):
            if self.stack[-1].aps_defines(name) or name not in self.own:
                self._add(name, node, f"{receiver.id}.{name}")
            return
        # Another object's attribute: whose it is cannot be known without types, so it
        # counts unless NOT_APSCHEDULER says whose it is.
        self._add(name, node, f"{ast.unparse(receiver)}.{name}")

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._attribute(node.value, node.attr, node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        if (
            isinstance(func, ast.Name)
            and func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            self._attribute(node.args[0], node.args[1].value, node)
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").startswith("apscheduler"):
            for alias in node.names:
                if _is_private(alias.name):
                    self._add(alias.name, node, f"from {node.module} import {alias.name}")


def scan_package(package_dir: Path = PACKAGE_DIR) -> list[Use]:
    """Every use of a private APScheduler name in the package's source (before exclusions)."""
    modules = _package_modules(package_dir)
    aps = set(apscheduler_private_names(_apscheduler_imports(modules)))
    classes: dict[int, _Class] = {}
    own: set[str] = set()
    for module in modules:
        for node in ast.walk(module.tree):
            if isinstance(node, ast.ClassDef):
                info = _Class(node, _runtime_bases(module, node))
                info.defines = _self_names(node)
                classes[id(node)] = info
                own.update(name for name in info.defines if not info.aps_defines(name))
    uses: list[Use] = []
    for module in modules:
        scanner = _Scanner(module, package_dir.parent, classes, aps, own)
        scanner.visit(module.tree)
        uses.extend(scanner.uses)
    return uses


def relied_on(uses: Iterable[Use]) -> dict[str, list[Use]]:
    """The uses that rely on APScheduler (not excluded by NOT_APSCHEDULER), by name."""
    found: dict[str, list[Use]] = {}
    for use in uses:
        if (use.path, use.expr) not in NOT_APSCHEDULER:
            found.setdefault(use.name, []).append(use)
    return found


@cache
def package_uses() -> tuple[Use, ...]:
    return tuple(scan_package())


def unlisted(found: dict[str, list[Use]], table: Iterable[Reliance] = RELIANCES) -> str | None:
    """A failure message for used names the table does not list; None if all are listed."""
    listed = {reliance.name for reliance in table}
    lines = [
        f"  {name} at {use.where} ({use.expr})"
        for name in sorted(set(found) - listed)
        for use in found[name]
    ]
    if not lines:
        return None
    return (
        f"the package uses private APScheduler names (APScheduler {installed_version()}) "
        "that RELIANCES does not list; add each with what it is and why the package needs "
        "it, or say whose it is in NOT_APSCHEDULER:\n" + "\n".join(lines)
    )


def unused(found: dict[str, list[Use]], table: Iterable[Reliance] = RELIANCES) -> str | None:
    """A failure message for listed names the package no longer uses; None if all are used."""
    stale = sorted({reliance.label for reliance in table if reliance.name not in found})
    if not stale:
        return None
    return "RELIANCES lists names the package no longer uses; remove them: " + ", ".join(stale)


# ------------------------------------------------------------------ the tests


@pytest.mark.parametrize("reliance", RELIANCES, ids=lambda reliance: reliance.label)
def test_private_apscheduler_name_relied_on_is_unchanged_in_the_installed_release(
    reliance: Reliance,
) -> None:
    assert check(reliance) is None, check(reliance)


def test_every_private_apscheduler_name_the_package_uses_is_in_the_contract_table() -> None:
    message = unlisted(relied_on(package_uses()))
    assert message is None, message


def test_every_name_in_the_contract_table_is_still_used_by_the_package() -> None:
    message = unused(relied_on(package_uses()))
    assert message is None, message


def test_every_not_apscheduler_entry_still_matches_a_use() -> None:
    seen = {(use.path, use.expr) for use in package_uses()}
    stale = sorted(f"{path}: {expr}" for path, expr in NOT_APSCHEDULER if (path, expr) not in seen)
    assert not stale, f"NOT_APSCHEDULER entries match no use any more; remove them: {stale}"


def test_installed_apscheduler_is_within_the_pinned_range() -> None:
    version = Version(installed_version())
    assert version in PIN, (
        f"APScheduler {version} is installed; the package is checked against {PIN} only: "
        "run this contract test against the new release and update RELIANCES and the pin"
    )


def test_pyproject_pins_apscheduler_to_the_checked_release_series() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pins = [Requirement(spec) for spec in project["dependencies"]]
    pins = [req for req in pins if req.name.lower() == "apscheduler"]
    assert [req.specifier for req in pins] == [PIN], (
        f"pyproject.toml requires {[str(r) for r in pins]}; expected apscheduler{PIN}"
    )


# ------------------------------------------------------------------ the checker, seen to fail


def test_check_names_a_private_method_apscheduler_removed(monkeypatch: pytest.MonkeyPatch) -> None:
    from apscheduler.schedulers.base import BaseScheduler

    monkeypatch.delattr(BaseScheduler, "_process_jobs")
    reliance = next(r for r in RELIANCES if r.label == "BaseScheduler._process_jobs")
    message = check(reliance)
    assert message is not None
    assert message.startswith(
        f"APScheduler {installed_version()} changed BaseScheduler._process_jobs:"
    )
    assert "no longer define _process_jobs" in message


def test_check_names_changed_parameters_of_a_private_method(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apscheduler.schedulers.base import BaseScheduler

    def _real_add_job(self: Any, job: Any, alias: str, replace_existing: bool) -> None:
        """As if a release renamed the parameter ``jobstore_alias``."""

    monkeypatch.setattr(BaseScheduler, "_real_add_job", _real_add_job)
    reliance = next(r for r in RELIANCES if r.label == "BaseScheduler._real_add_job")
    assert check(reliance) == (
        f"APScheduler {installed_version()} changed BaseScheduler._real_add_job: its parameters "
        "are now (job, alias, replace_existing); the package relies on "
        "(job, jobstore_alias, replace_existing)"
    )


class RenamedJob:
    """``apscheduler.job.Job`` as a release that renamed ``_jobstore_alias`` might have it."""

    __slots__ = ("_scheduler", "_store_alias", "id")

    def __init__(self, scheduler: Any, id: str) -> None:
        self._scheduler = scheduler
        self._store_alias = None
        self.id = id

    def _modify(self, **changes: Any) -> None:
        pass


def test_check_names_a_renamed_private_attribute(monkeypatch: pytest.MonkeyPatch) -> None:
    import apscheduler.job

    monkeypatch.setattr(apscheduler.job, "Job", RenamedJob)
    reliance = next(r for r in RELIANCES if r.label == "Job._jobstore_alias")
    message = check(reliance)
    assert message == (
        f"APScheduler {installed_version()} changed Job._jobstore_alias: "
        "RenamedJob and its bases no longer define _jobstore_alias"
    )
    # What the renamed class still has is still found, by slot and by assignment.
    assert check(next(r for r in RELIANCES if r.label == "Job._scheduler")) is None


def test_check_names_a_private_method_turned_into_an_attribute(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from apscheduler.executors.base import BaseExecutor

    monkeypatch.setattr(BaseExecutor, "_run_job_success", None)
    reliance = next(r for r in RELIANCES if r.label == "BaseExecutor._run_job_success")
    assert check(reliance) == (
        f"APScheduler {installed_version()} changed BaseExecutor._run_job_success: it is now "
        "a attribute, the package relies on a method"
    )


# ------------------------------------------------------------------ the scan, seen to fail

SCRATCH = """
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.util import _Undefined


class Scheduler(AsyncIOScheduler):
    _eventloop = None  # APScheduler's attribute, declared again: still a reliance

    def _process_jobs(self):  # an override
        return self._jobstores

    def _mine(self):  # the package's own
        return self._cache


def peek(executor):
    return executor._instances, getattr(executor, "_lock")


class Own:
    def __init__(self):
        self._lock = 1
        self._cache = {}

    def get(self):
        return self._lock
"""


def test_scan_finds_overrides_attribute_reads_and_private_imports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "scratchpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text(SCRATCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = relied_on(scan_package(package))
    assert {name: [use.where for use in uses] for name, uses in found.items()} == {
        "_Undefined": ["scratchpkg/mod.py:3"],
        "_eventloop": ["scratchpkg/mod.py:7"],
        "_process_jobs": ["scratchpkg/mod.py:9"],
        "_jobstores": ["scratchpkg/mod.py:10"],
        "_instances": ["scratchpkg/mod.py:17"],
        "_lock": ["scratchpkg/mod.py:17"],
    }
    table = [Reliance(_SCHEDULER, name, "attribute", "") for name in ("_jobstores", "_gone")]
    assert unused(found, table) == (
        "RELIANCES lists names the package no longer uses; remove them: BaseScheduler._gone"
    )


def test_a_new_use_of_an_unlisted_private_name_fails_naming_file_and_line(
    tmp_path: Path,
) -> None:
    # A scratch copy of the package, with one more use, as a change to it might add.
    copy = tmp_path / PACKAGE
    for path in PACKAGE_DIR.rglob("*.py"):
        target = copy / path.relative_to(PACKAGE_DIR)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    manager = copy / "manager.py"
    lines = manager.read_text().splitlines()
    lines += ["", "", "def executors_lock(scheduler):", "    return scheduler._executors_lock"]
    manager.write_text("\n".join(lines) + "\n")
    message = unlisted(relied_on(scan_package(copy)))
    before = unlisted(relied_on(package_uses())) or ""
    assert message is not None
    reported = set(message.splitlines()[1:]) - set(before.splitlines()[1:])
    assert reported == {
        f"  _executors_lock at {PACKAGE}/manager.py:{len(lines)} (scheduler._executors_lock)"
    }, message
