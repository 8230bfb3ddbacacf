"""The import rules of the layout (docs/design.md section 8), read from the source with ast.

- ``schemas/`` and ``processors/`` are pure: nothing of the runtime (``streams``,
  ``devkafka``), of Kafka or Faust, of the network; and ``processors/`` reads no
  clock (callers pass ``now``);
- ``streams/`` (what the wheel ships) imports nothing from ``devkafka/`` or ``tests/``;
- no import cycle among the project's modules.

Every ``import`` statement counts, also one inside a function (a lazy import is
still a dependency), except under ``if TYPE_CHECKING:``. The cycle check looks at
module-level imports only: a lazy import inside a function cannot deadlock
module loading, and the CLI uses them on purpose to start fast.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import PROJECT_ROOT

PACKAGES = ("schemas", "processors", "streams", "devkafka")
PURE_FORBIDDEN = (
    "streams",
    "devkafka",
    "tests",
    "faust",
    "mode",
    "aiokafka",
    "aiohttp",
    "asyncio",
    "socket",
    "subprocess",
)
CLOCK_MODULES = ("time",)
CLOCK_CALLS = ("now", "utcnow", "today")
"""``datetime.now()``, ``datetime.utcnow()``, ``date.today()``: wall-clock reads."""


@dataclass(frozen=True)
class Import:
    target: str
    """The module imported (for ``from a import b``: ``a.b`` if that is a module, else ``a``)."""
    line: int
    top_level: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    return {
        module_name(p): p
        for package in PACKAGES
        for p in sorted((PROJECT_ROOT / package).rglob("*.py"))
    }


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(node: ast.AST, top_level: bool) -> Iterator[tuple[ast.AST, bool]]:
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for other in child.orelse:
                yield other, top_level
                yield from _walk(other, top_level)
            continue
        nested = isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield child, top_level
        yield from _walk(child, top_level and not nested)


def imports_of(name: str, path: Path, modules: Mapping[str, Path]) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: list[Import] = []
    for node, top in _walk(tree, True):
        if isinstance(node, ast.Import):
            out.extend(Import(a.name, node.lineno, top) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append(Import(sub if sub in modules else base, node.lineno, top))
    return out


def _under(target: str, roots: tuple[str, ...]) -> bool:
    return any(target == r or target.startswith(f"{r}.") for r in roots)


def _clock_reads(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in CLOCK_CALLS
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id in ("datetime", "date")
        ):
            found.append(f"line {node.lineno}: {node.func.value.id}.{node.func.attr}()")
    return found


def find_cycle(graph: Mapping[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (cycle := visit(nxt)) is not None:
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


MODULES = project_modules()
IMPORTS = {name: imports_of(name, path, MODULES) for name, path in MODULES.items()}


def _violations(owner: tuple[str, ...], forbidden: tuple[str, ...]) -> list[str]:
    return [
        f"{name} line {imp.line} imports {imp.target}"
        for name, imports in sorted(IMPORTS.items())
        if _under(name, owner)
        for imp in imports
        if _under(imp.target, forbidden)
    ]


def test_the_scanner_sees_the_project_and_its_imports() -> None:
    # Guards the guards: an empty scan would make every rule below pass.
    assert {"schemas.events", "processors.fold", "streams.engine.faust_edge"} <= MODULES.keys()
    fold = {i.target for i in IMPORTS["processors.fold"]}
    assert {"schemas.events", "schemas.state", "processors.policy"} <= fold
    assert any(i.target == "faust" for i in IMPORTS["streams.engine.faust_edge"])
    lazy = [i for imports in IMPORTS.values() for i in imports if not i.top_level]
    assert lazy, "function-level imports are seen too"


def test_relative_imports_resolve_to_project_modules(tmp_path: Path) -> None:
    pkg = PROJECT_ROOT / "processors" / "alerting" / "x.py"
    modules = {"processors.alerting.config": pkg, "processors.fold": pkg}
    src = tmp_path / "x.py"
    src.write_text("from . import config\nfrom ..fold import apply\n", encoding="utf-8")
    got = [i.target for i in imports_of("processors.alerting.x", src, modules)]
    assert got == ["processors.alerting.config", "processors.fold"]


@pytest.mark.parametrize("package", ["schemas", "processors"])
def test_pure_packages_import_nothing_of_the_runtime(package: str) -> None:
    assert _violations((package,), PURE_FORBIDDEN) == []


def test_schemas_import_nothing_of_processors() -> None:
    assert _violations(("schemas",), ("processors",)) == []


def test_processors_read_no_clock() -> None:
    found = _violations(("processors",), CLOCK_MODULES)
    for name, path in sorted(MODULES.items()):
        if _under(name, ("processors",)):
            found += [f"{name} {where}" for where in _clock_reads(path)]
    assert found == []


def test_the_clock_check_sees_a_clock_read(tmp_path: Path) -> None:
    src = tmp_path / "bad.py"
    src.write_text(
        "from datetime import datetime\n\ndef f():\n    return datetime.now()\n", encoding="utf-8"
    )
    assert _clock_reads(src) == ["line 4: datetime.now()"]


def test_the_runtime_imports_nothing_of_devkafka_or_tests() -> None:
    assert _violations(("streams",), ("devkafka", "tests")) == []


def test_no_import_cycle_among_the_project_modules() -> None:
    graph = {
        name: {i.target for i in imports if i.top_level and i.target in MODULES} - {name}
        for name, imports in IMPORTS.items()
    }
    assert find_cycle(graph) is None


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "d": {"a", "c"}}) is None
