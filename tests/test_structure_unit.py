"""The tree's rules, read from the source with ast (nothing is imported or run):

- no module imports another module's private names: ``from x import _y``, or
  ``mod._y`` where ``mod`` is a project module it imported;
- ``toolkit`` never imports urwid (the menu is one front end of it, the CLI another);
- views and widgets (``tui/views``, ``tui/widgets``) only build widgets: they import no
  subprocess and open no file or device (their controllers do that).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("toolkit", "tui")
# what a view or widget must not import: running programs, files, devices, sockets
NO_IO_IMPORTS = {"subprocess", "shutil", "socket", "io", "pathlib", "fcntl", "mmap", "pyudev"}
# calls that open, read or list files and devices: open(), os.<any of these>(), and methods
# that only file objects have (a controller's own ``open`` is not one of them)
NO_IO_CALLS = {"open", "fdopen", "listdir", "scandir", "walk", "stat", "lstat", "popen",
               "system", "read", "write", "unlink", "remove", "rename", "makedirs", "mkdir"}
FILE_METHODS = {"read_text", "read_bytes", "write_text", "write_bytes", "ioctl"}


def _modules() -> list[tuple[str, Path]]:
    out = []
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out.append((".".join(parts), path))
    return out


MODULES = dict(_modules())


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _absolute(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of what ``from ... import`` imports from."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[:len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, tree: ast.AST):
    """(imported module, names bound to project modules, private names imported, line)."""
    modules: list[tuple[str, int]] = []
    bound: dict[str, str] = {}  # local name -> project module
    private: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                modules.append((a.name, node.lineno))
                if a.name in MODULES:
                    bound[a.asname or a.name.split(".")[0]] = (a.name if a.asname
                                                               else a.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            source = _absolute(module, path, node)
            modules.append((source, node.lineno))
            for a in node.names:
                if _private(a.name):
                    private.append((f"from {source} import {a.name}", node.lineno))
                if f"{source}.{a.name}" in MODULES:
                    modules.append((f"{source}.{a.name}", node.lineno))
                    bound[a.asname or a.name] = f"{source}.{a.name}"
    return modules, bound, private


def _dotted(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        inner = _dotted(node.value)
        return inner and f"{inner}.{node.attr}"
    return None


def _private_uses(tree: ast.AST, bound: dict[str, str]):
    """``mod._y`` (also ``pkg.mod._y``) where ``mod`` names a project module."""
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Attribute) and _private(node.attr)):
            continue
        owner = _dotted(node.value)
        if owner is None:
            continue
        head, _, rest = owner.partition(".")
        if head in bound and ".".join(filter(None, (bound[head], rest))) in MODULES:
            yield f"{owner}.{node.attr}", node.lineno


def _io_calls(tree: ast.AST):
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        if isinstance(f, ast.Name) and f.id == "open":
            yield "open", node.lineno
        elif isinstance(f, ast.Attribute):
            owner = _dotted(f.value) or ""
            if (owner in ("os", "io", "fcntl") and f.attr in NO_IO_CALLS) \
                    or f.attr in FILE_METHODS:
                yield f"{owner}.{f.attr}", node.lineno


def _violations() -> list[str]:
    found = []
    for module, path in MODULES.items():
        rel = path.relative_to(ROOT)
        tree = ast.parse(path.read_text(), str(rel))
        imported, bound, private = _imports(module, path, tree)
        found += [f"{rel}:{line}: imports a private name: {what}" for what, line in private]
        found += [f"{rel}:{line}: uses another module's private name {what}"
                  for what, line in _private_uses(tree, bound)]
        if module.startswith("toolkit"):
            found += [f"{rel}:{line}: toolkit imports {name}" for name, line in imported
                      if name.split(".")[0] == "urwid"]
        if module.startswith(("tui.views", "tui.widgets")):
            found += [f"{rel}:{line}: a view or widget imports {name}" for name, line in imported
                      if name.split(".")[0] in NO_IO_IMPORTS]
            found += [f"{rel}:{line}: a view or widget does I/O: {call}()"
                      for call, line in _io_calls(tree)]
    return found


def test_the_rules_see_a_violation():
    """The checks themselves: each rule catches a sample that breaks it."""
    sample = ast.parse("from toolkit.cli import copy\nfrom tui.views.copy import _side\n"
                       "copy._confirm(1)\nimport subprocess\nopen('/dev/sda')\nos.listdir('/')\n"
                       "controller.open()\n")
    _, bound, private = _imports("tui.views.x", ROOT / "tui/views/x.py", sample)
    assert private == [("from tui.views.copy import _side", 2)]
    assert list(_private_uses(sample, bound)) == [("copy._confirm", 3)]
    assert [c for c, _ in _io_calls(sample)] == ["open", "os.listdir"]


def test_no_private_imports_no_urwid_in_toolkit_no_io_in_views():
    assert MODULES, "found the packages"
    problems = _violations()
    assert not problems, "\n" + "\n".join(problems)
