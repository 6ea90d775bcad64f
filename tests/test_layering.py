"""No module of the package uses another module's private names.

A cross-module call goes through a name without a leading underscore: if a module needs
another's private member, the boundary is in the wrong place. The check reads every module
with ``ast`` and reports ``module:line name`` for

* an attribute ``x._name`` where ``x`` is not ``self`` or ``cls`` (``getattr``, ``setattr``
  and ``hasattr`` with a literal ``"_name"`` count too), unless the module itself defines
  ``_name`` (a method, a class attribute, ``self._name = ...``, a ``__slots__`` entry: its
  own classes comparing two of their instances, say);
* ``from <this package> import _name``.

The only exceptions are private names of the libraries the adapter builds on, listed below
by module. APScheduler's are each listed, with why, in ``tests/test_apscheduler_contract.py``,
which fails if an APScheduler release changes one; do not add one here without adding it
there.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "nexios_contrib_scheduler"

# module (relative to the package) -> private names of other libraries it may use.
ALLOWED: dict[str, frozenset[str]] = {
    # APScheduler's (see tests/test_apscheduler_contract.py): AdapterScheduler builds jobs
    # as Job(...) does, and clears the executors' instance counts after a closed loop.
    "scheduler.py": frozenset({"_lock", "_instances", "_scheduler", "_jobstore_alias", "_modify"}),
    # APScheduler's: the job store alias an execution event carries.
    "executor.py": frozenset({"_jobstore_alias"}),
    # APScheduler's: the fires a coalesced submission merged, to record them as missed.
    "stores/sync.py": frozenset({"_get_run_times"}),
    # Nexios': the app's own startup and shutdown handlers, run by the lifespan that
    # replaces Nexios' (which would skip them).
    "integration.py": frozenset({"_startup", "_shutdown"}),
}

_REFLECTION = ("getattr", "setattr", "hasattr", "delattr")


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _own_names(tree: ast.AST) -> set[str]:
    """The private names a module defines itself."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
        elif isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__slots__" for t in node.targets
        ):
            names.update(
                c.value
                for c in ast.walk(node.value)
                if isinstance(c, ast.Constant) and isinstance(c.value, str)
            )
    return {name for name in names if _is_private(name)}


def _uses(tree: ast.AST) -> Iterator[tuple[int, str, str]]:
    """(line, private name, how it is reached) for each use of a private name from outside."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            yield node.lineno, node.attr, ast.unparse(node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _REFLECTION
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
        ):
            base = node.args[0]
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            yield node.lineno, node.args[1].value, ast.unparse(node)
        elif isinstance(node, ast.ImportFrom) and (
            node.level > 0 or (node.module or "").startswith("nexios_contrib_scheduler")
        ):
            for alias in node.names:
                if _is_private(alias.name):
                    yield node.lineno, alias.name, f"from {node.module} import {alias.name}"


def violations(source: str, module: str) -> list[str]:
    """``module:line expression`` for every private name ``source`` takes from elsewhere."""
    tree = ast.parse(source)
    own = _own_names(tree)
    allowed = ALLOWED.get(module, frozenset())
    found = []
    for line, name, text in _uses(tree):
        imported = text.startswith("from ")  # an import names another module's private
        if imported or (name not in own and name not in allowed):
            found.append(f"{module}:{line} {text}")
    return sorted(set(found))


def _modules() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_no_module_uses_another_modules_private_names():
    found = []
    for path in _modules():
        module = path.relative_to(PACKAGE).as_posix()
        found += violations(path.read_text(encoding="utf-8"), module)
    assert found == [], "private names used across modules:\n" + "\n".join(found)


def test_the_allowed_names_are_still_used():
    """An exception no module needs any more is taken off the list."""
    stale = []
    for module, names in ALLOWED.items():
        path = PACKAGE / module
        if not path.exists():
            continue
        used = {name for _, name, _ in _uses(ast.parse(path.read_text(encoding="utf-8")))}
        stale += [f"{module}: {name}" for name in sorted(names - used)]
    assert stale == []


class TestTheCheck:
    """The check finds what it is for, and only that."""

    @pytest.mark.parametrize(
        "source",
        [
            "def f(manager):\n    return manager._records\n",
            "class P:\n    def f(self):\n        return self.manager._records\n",
            "def f(m):\n    return getattr(m, '_persistence', None)\n",
            "def f(m, value):\n    setattr(m, '_records', value)\n",
            "from .manager import _aps_grace\n",
            "from nexios_contrib_scheduler.triggers import _check_count\n",
        ],
    )
    def test_a_private_name_of_another_module_is_reported(self, source):
        (found,) = violations(source, "example.py")
        assert found.startswith("example.py:")

    @pytest.mark.parametrize(
        "source",
        [
            "class A:\n    def f(self):\n        return self._x\n",
            "class A:\n    @classmethod\n    def f(cls):\n        return cls._x\n",
            # its own class, another instance of it
            "class A:\n    def __init__(self):\n        self._key = 1\n"
            "    def __eq__(self, other):\n        return self._key == other._key\n",
            "class A:\n    __slots__ = ('_record',)\n"
            "    def __eq__(self, other):\n        return other._record is self._record\n",
            "def f(x):\n    return x.__class__\n",
            "from .manager import SchedulerManager\n",
        ],
    )
    def test_own_and_public_names_are_not_reported(self, source):
        assert violations(source, "example.py") == []

    def test_a_library_name_is_allowed_only_where_listed(self):
        source = "def f(job):\n    return job._jobstore_alias\n"
        assert violations(source, "executor.py") == []
        assert violations(source, "manager.py") == ["manager.py:2 job._jobstore_alias"]
