"""The i2i source files a module runs: its import closure inside the package, read from the code
(every ``import i2i...`` at any level, also inside functions, and every module named in a string
for importlib, as ``"i2i.models.cut:CUT"`` in the model registry), not from what one process
happened to import.

Two users: the checkpoint fingerprint hashes the training code's closure, and the ``code`` DVC
stage records, for each stage, the files its command runs (:func:`stage_files`), so DVC re-runs
a stage when one of them changes and only then. A CLI command imports its code inside its
function, so a command's files are ``cli.py``'s own imports plus its function's, with their
closures (tests/test_pipeline.py checks them against what each stage imports when it runs)."""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import yaml

from i2i.io import write_json

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
    return _named(ast.parse(path.read_text(), str(path)))


def _named(tree: ast.AST) -> set[str]:
    """Every i2i module named in an import (or an importlib string) anywhere in ``tree``."""
    names: set[str] = set()
    for node in _walk(tree):
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
    return _reach([start])


def _reach(start: list[Path]) -> list[Path]:
    seen: set[Path] = set()
    todo = list(start)
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


def _walk(tree: ast.AST):
    """``ast.walk`` without ``if TYPE_CHECKING:`` blocks, which never run."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if not (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Name)
                and child.test.id == "TYPE_CHECKING"
            ):
                todo.append(child)
            else:
                todo += child.orelse


def command_files(command: str) -> list[Path]:
    """The source files the CLI command ``command`` (e.g. ``train``) runs: ``cli.py`` and the
    closure of what it imports outside its commands' functions and inside this command's."""
    cli = PACKAGE / "cli.py"
    tree = ast.parse(cli.read_text(), str(cli))
    commands = {_command_name(f): f for f in tree.body if _command_name(f)}
    if command not in commands:
        raise ValueError(f"no i2i command {command!r}; commands: {', '.join(sorted(commands))}")
    shared = [node for node in tree.body if not _command_name(node)]
    named = _named(ast.Module(body=shared, type_ignores=[])) | _named(commands[command])
    return sorted({cli, *_reach([f for f in map(_file, named) if f is not None])})


def _command_name(node: ast.stmt) -> str | None:
    """The CLI name of a ``@main.command(...)`` or ``@main.group(...)`` function (a group's
    subcommands too), None for anything else."""
    if not isinstance(node, ast.FunctionDef):
        return None
    for decorator in node.decorator_list:
        call = decorator if isinstance(decorator, ast.Call) else None
        target = call.func if call else decorator
        if isinstance(target, ast.Attribute) and target.attr in ("command", "group"):
            if call and call.args and isinstance(call.args[0], ast.Constant):
                return str(call.args[0].value)
            return node.name.replace("_", "-")
    return None


def stage_command(script: Path) -> str:
    """The CLI command a DVC stage script (``stages/train.py``) runs: the first item of the list
    it passes to ``main``."""
    for node in ast.walk(ast.parse(script.read_text(), str(script))):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "main"
            and node.args
            and isinstance(node.args[0], ast.List)
            and node.args[0].elts
            and isinstance(node.args[0].elts[0], ast.Constant)
        ):
            return str(node.args[0].elts[0].value)
    raise ValueError(f"{script}: no main([<command>, ...]) call")


def stage_files(script: Path, command: str | None = None) -> list[Path]:
    """The files a DVC stage runs: its script and its command's files (``command``, the
    script's :func:`stage_command`, where the caller has it already)."""
    return [script.resolve(), *command_files(command or stage_command(script))]


def file_hashes(files: list[Path]) -> dict[str, str]:
    """Each file's repository-relative path and the SHA-256 of its content."""
    root = PACKAGE.parent
    return {str(f.relative_to(root)): hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def write_stage_records(pipeline: Path, out: Path) -> dict[str, dict[str, str]]:
    """The ``code`` DVC stage: for each stage of ``pipeline`` (dvc.yaml) that runs a
    ``stages/*.py`` script and is not always run, write ``<out>/<stage>.json``, the files its
    command runs with their hashes. A stage depends on its record, so DVC re-runs it when one
    of those files changes, and only then. A record's content changes only with those files."""
    stages = yaml.safe_load(pipeline.read_text())["stages"]
    records = {}
    for name, stage in stages.items():
        words = str(stage.get("cmd", "")).split()
        if stage.get("always_changed") or words[:1] != ["python"] or len(words) < 2:
            continue
        script = pipeline.parent / words[1]
        command = stage_command(script)
        files = file_hashes(stage_files(script, command))
        records[name] = {"command": command, "files": files}
    for name, record in records.items():
        target = out / f"{name}.json"
        text = json.dumps(record, indent=2) + "\n"
        if not target.is_file() or target.read_text() != text:  # unchanged: left as it is
            write_json(target, record)
    return records
