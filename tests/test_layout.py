"""The shape of the code: small modules, short functions, a pure core.

Measured with ``ast`` on the sources: a module over 450 lines or a function
over 80 lines is a sign that two jobs share one place; a pure module that
imports I/O or an edge module cannot be tested, or trusted, on bytes alone.
"""

from __future__ import annotations

import ast
from pathlib import Path

SYNCD = Path(__file__).resolve().parent.parent / "syncd"
MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 80

SIZE_EXCEPTIONS: frozenset[str] = frozenset()  # none: every module keeps the limits

PURE = frozenset(
    {
        "tinc/names", "tinc/hostfile", "tinc/conf", "tinc/subnet", "tinc/keys", "rules/policy", "rules/validate",
        "rules/tree", "signing/allowed_signers", "signing/sshsig", "rules/authority", "rules/owners", "rules/plan",
        "signing/commits", "git/packscan", "findings", "rules/allocate", "rules/units", "tinc/learnedkey",
    }
)  # fmt: skip
EDGE = frozenset({"git", "node", "sync", "cli"})
FORBIDDEN = frozenset({"dulwich", "subprocess", "signal", "socket"}) | {f"syncd.{m}" for m in EDGE}
# Address parsing as tincd does it (inet_pton / inet_aton of the C library)
# is pure; nothing else of ``socket`` may be used by the core.
SOCKET_PURE = frozenset({"inet_pton", "inet_aton", "AF_INET", "AF_INET6"})


def modules() -> dict[str, ast.Module]:
    return {
        str(path.relative_to(SYNCD).with_suffix("")): ast.parse(path.read_text(), str(path))
        for path in sorted(SYNCD.rglob("*.py"))
    }


def imported(tree: ast.Module) -> set[str]:
    """Every module a module imports, at any depth (lazy imports too)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def too_big(name: str, tree: ast.Module) -> list[str]:
    problems = []
    lines = len((SYNCD / f"{name}.py").read_text().splitlines())
    if lines > MAX_MODULE_LINES:
        problems.append(f"syncd/{name}.py: {lines} lines")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            assert node.end_lineno is not None
            length = node.end_lineno - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                problems.append(f"syncd/{name}.py:{node.lineno}: {node.name}() is {length} lines")
    return problems


def test_no_module_or_function_is_too_big() -> None:
    problems = [p for name, tree in modules().items() if name not in SIZE_EXCEPTIONS for p in too_big(name, tree)]
    assert problems == []


def test_the_pure_core_imports_no_io_and_no_edge_module() -> None:
    found = modules()
    assert PURE - found.keys() <= {"authority", "owners"}, "a pure module was renamed: update PURE"
    problems = []
    for name in sorted(PURE & found.keys()):
        tree = found[name]
        bad = {m for m in imported(tree) if m.split(".")[0] in FORBIDDEN or ".".join(m.split(".")[:2]) in FORBIDDEN}
        problems += [f"syncd/{name}.py imports {m}" for m in sorted(bad - {"socket"})]
        if "socket" in bad:
            used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and _is_name(n.value, "socket")}
            problems += [f"syncd/{name}.py uses socket.{attr}" for attr in sorted(used - SOCKET_PURE)]
    assert problems == []


def _is_name(node: ast.expr, name: str) -> bool:
    return isinstance(node, ast.Name) and node.id == name


def test_the_checks_catch_what_they_look_for() -> None:
    long_body = "\n".join(["def f() -> None:", *["    pass"] * MAX_FUNCTION_LINES])
    assert too_big("tinc/names", ast.parse(long_body)) == ["syncd/tinc/names.py:1: f() is 81 lines"]
    tree = ast.parse("import socket\nfrom syncd.sync.agent import sync_once\nsocket.socket()\n")
    assert {"socket", "syncd.sync.agent", "syncd.sync.agent.sync_once"} <= imported(tree)
