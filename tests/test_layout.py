"""The shape of the code: packages for the layers, no circle, small modules.

Measured with ``ast`` on the sources, counting every import: at module
level, inside functions and under ``TYPE_CHECKING``.

* The packages form the table of docs/architecture.md: each imports only
  the packages below it (``LAYERS``), so no import runs up the table.
* The pure packages (``signing``, ``tinc``, ``rules``) import no I/O and no
  edge library: they can be tested, and trusted, on bytes alone.
* No import circle between modules.
* No module over 450 lines, no function over 80: a sign that two jobs
  share one place.

Every check is run on a synthetic violation too (the last tests), so that
a check that can no longer fail is noticed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator, Mapping
from pathlib import Path

SYNCD = Path(__file__).resolve().parent.parent / "syncd"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80

# What each package may import, besides itself (docs/architecture.md,
# "Packages").  "root" is syncd/errors.py, syncd/findings.py and the
# version in syncd/__init__.py; "entry" is ``python -m syncd``.
LAYERS: dict[str, frozenset[str]] = {
    "root": frozenset(),
    "signing": frozenset({"root"}),
    "tinc": frozenset({"signing", "root"}),
    "rules": frozenset({"tinc", "signing", "root"}),
    "git": frozenset({"rules", "tinc", "signing", "root"}),
    "node": frozenset({"rules", "tinc", "signing", "root"}),
    "sync": frozenset({"git", "node", "rules", "tinc", "signing", "root"}),
    "cli": frozenset({"sync", "git", "node", "rules", "tinc", "signing", "root"}),
    "entry": frozenset({"cli"}),
}
PURE = frozenset({"signing", "tinc", "rules"})
IMPURE = frozenset({"dulwich", "subprocess", "signal", "socket", "watchdog", "structlog"})
# Address parsing as tincd does it (inet_pton / inet_aton of the C library)
# is pure; nothing else of ``socket`` may be used by a pure package.
SOCKET_PURE = frozenset({"inet_pton", "inet_aton", "AF_INET", "AF_INET6"})

Modules = Mapping[str, ast.Module]  # "syncd.tinc.keys" -> its tree


def modules() -> dict[str, ast.Module]:
    found = {}
    for path in sorted(SYNCD.rglob("*.py")):
        parts = path.relative_to(SYNCD.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = ast.parse(path.read_text(), str(path))
    return found


def package(module: str) -> str:
    """The layer a module is in."""
    parts = module.split(".")
    if parts[1:] == ["__main__"]:
        return "entry"
    return parts[1] if len(parts) > 2 or module in {f"syncd.{p}" for p in LAYERS} else "root"


def imported(tree: ast.Module) -> set[str]:
    """Every name a module imports, at any depth (lazy and TYPE_CHECKING
    imports too): ``from a.b import c`` gives ``a.b`` and ``a.b.c``."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def edges(found: Modules) -> dict[str, set[str]]:
    """Module -> the syncd modules it imports (``from syncd.tinc import
    keys`` names the module ``syncd.tinc.keys``; ``from syncd.tinc.keys
    import PublicKey`` the module too)."""
    graph: dict[str, set[str]] = {}
    for name, tree in found.items():
        graph[name] = {m for m in imported(tree) if m in found and m != name}
    return graph


def upward(found: Modules) -> list[str]:
    """Imports of a package that its layer may not make."""
    problems = []
    for source, targets in sorted(edges(found).items()):
        here = package(source)
        for target in sorted(targets):
            there = package(target)
            if there != here and there not in LAYERS[here]:
                problems.append(f"{source} ({here}) imports {target} ({there})")
    return problems


def impure(found: Modules) -> list[str]:
    """What a pure package imports of I/O and edge libraries."""
    problems = []
    for name, tree in sorted(found.items()):
        if package(name) not in PURE:
            continue
        bad = {m for m in imported(tree) if m.split(".")[0] in IMPURE}
        problems += [f"{name} imports {m}" for m in sorted(bad) if m.split(".")[0] != "socket"]
        if any(m.split(".")[0] == "socket" for m in bad):
            used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _is_name(n.value, "socket")}
            problems += [f"{name} uses socket.{attr}" for attr in sorted(used - SOCKET_PURE)]
    return problems


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def circles(found: Modules) -> list[list[str]]:
    """Every import circle (each strongly connected set of two modules or
    more, or a module importing itself), by Tarjan's algorithm."""
    graph = edges(found)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found_circles: list[list[str]] = []

    def visit(start: str) -> None:
        # iterative, so that a deep chain of imports cannot overflow Python's stack
        work: list[tuple[str, Iterator[str]]] = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, targets = work[-1]
            target = next(targets, None)
            if target is not None:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(sorted(graph[target]))))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                members = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    members.append(member)
                    if member == node:
                        break
                if len(members) > 1:
                    found_circles.append(sorted(members))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found_circles)


def too_big(name: str, tree: ast.Module, lines: int) -> list[str]:
    problems = []
    if lines > MAX_MODULE_LINES:
        problems.append(f"{name}: {lines} lines")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                problems.append(f"{name}:{node.lineno}: {node.name}() is {length} lines")
    return problems


# --- the rules, on the code ----------------------------------------------------------------------


def test_every_module_is_in_a_layer() -> None:
    found = modules()
    layers = {package(name) for name in found}
    assert layers == set(LAYERS), layers
    root = sorted(name for name in found if package(name) == "root")
    assert root == ["syncd", "syncd.errors", "syncd.findings"], "a module at the root: put it in its package"


def test_no_import_runs_up_the_table() -> None:
    assert upward(modules()) == []


def test_the_pure_packages_import_no_io_and_no_edge_library() -> None:
    assert impure(modules()) == []


def test_no_import_circle() -> None:
    assert circles(modules()) == []


def test_no_module_or_function_is_too_big() -> None:
    problems = []
    for name, tree in modules().items():
        path = SYNCD.parent / Path(*name.split("."))
        source = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
        problems += too_big(name, tree, len(source.read_text().splitlines()))
    assert problems == []


# --- the checks catch what they look for -------------------------------------------------------


def synthetic(**sources: str) -> dict[str, ast.Module]:
    """Modules from source text, named with "_" for "." (``syncd_tinc_x``)."""
    return {name.replace("_", "."): ast.parse(text) for name, text in sources.items()}


def test_the_checks_catch_a_module_or_function_too_big() -> None:
    long_body = "\n".join(["def f() -> None:", *["    pass"] * MAX_FUNCTION_LINES])
    assert too_big("syncd.tinc.names", ast.parse(long_body), 81) == ["syncd.tinc.names:1: f() is 81 lines"]
    assert too_big("syncd.tinc.names", ast.parse(""), 451) == ["syncd.tinc.names: 451 lines"]


def test_the_checks_catch_an_import_up_the_table() -> None:
    found = synthetic(
        syncd_tinc_x="def f() -> None:\n    from syncd.rules.y import g\n",  # lazy: counted
        syncd_rules_y="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from syncd.node import z\n",
        syncd_node_z="from syncd.git.w import v\n",  # siblings: node may not import git
        syncd_git_w="from syncd import errors\n",
        syncd_errors="",
    )
    assert upward(found) == [
        "syncd.node.z (node) imports syncd.git.w (git)",
        "syncd.rules.y (rules) imports syncd.node.z (node)",
        "syncd.tinc.x (tinc) imports syncd.rules.y (rules)",
    ]


def test_the_checks_catch_io_in_a_pure_package() -> None:
    found = synthetic(
        syncd_rules_x="import socket\nimport structlog\nsocket.inet_pton(socket.AF_INET6, '::')\nsocket.socket()\n",
        syncd_tinc_y="def f() -> None:\n    import subprocess\n",
        syncd_node_z="import subprocess\nimport socket\nsocket.socket()\n",  # an edge package may
    )
    assert impure(found) == [
        "syncd.rules.x imports structlog",
        "syncd.rules.x uses socket.socket",
        "syncd.tinc.y imports subprocess",
    ]


def test_the_checks_catch_a_circle() -> None:
    found = synthetic(
        syncd_sync_a="from syncd.sync.b import x\n",
        syncd_sync_b="from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from syncd.sync.c import y\n",
        syncd_sync_c="def f() -> None:\n    from syncd.sync import a\n",
        syncd_sync_d="from syncd.sync.a import z\n",
    )
    assert circles(found) == [["syncd.sync.a", "syncd.sync.b", "syncd.sync.c"]]
    assert circles({k: v for k, v in found.items() if k != "syncd.sync.c"}) == []
