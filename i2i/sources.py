"""The i2i source files a module runs: its import closure inside the package, read from the code
(every ``import i2i...`` at any level, also inside functions, and every module named in a string
for importlib, as ``"i2i.models.cut:CUT"`` in the model registry), not from what one process
happened to import. The checkpoint fingerprint hashes the training code's closure; the DVC
train stage lists the same files as its dependencies (tests/test_pipeline.py checks both)."""

from __future__ import annotations

import ast
import hashlib
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
_NAMED = re.compile(r"^(i2i(?:\.\w+)+)(?::\w+)?$")  # "i2i.models.cut" or "i2i.models.cut:CUT"


def _file(module: str) -> Path | None:
    path = PACKAGE.parent.joinpath(*module.split("."))
    for candidate in (path / "__init__.py", path.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    """Every i2i module ``path`` names in an import, with its parent packages."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found = [node.module] + [
                f"{node.module}.{a.name}" for a in node.names
            ]  # names may be modules
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            named = _NAMED.match(node.value)
            found = [named[1]] if named else []
        else:
            continue
        for name in found:
            parts = name.split(".")
            if parts[0] == "i2i":
                names |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    return names


def closure(module: str) -> list[Path]:
    """The source files of ``module`` (e.g. ``i2i.train``) and of every i2i module it imports,
    directly or not, sorted."""
    start = _file(module)
    if start is None:
        raise ValueError(f"no i2i module {module!r}")
    seen, todo = set(), [start]
    while todo:
        path = todo.pop()
        if path not in seen:
            seen.add(path)
            todo += [f for f in map(_file, _imports(path)) if f is not None]
    return sorted(seen)


def digest(files: list[Path]) -> str:
    """A short hash of the files' package-relative names and contents."""
    h = hashlib.sha256()
    for path in files:
        h.update(str(path.relative_to(PACKAGE)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]
