"""Every package the code imports is declared in pyproject.toml: the library's and the stage
scripts' imports among the dependencies, the tests' among those and the `test` extra. A package
that arrives only through another one's dependencies (matplotlib through mlflow, say) would
break the day that one drops it."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions

import pytest

from tests.conftest import REPO

tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised (PEP 503)."""
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9._-]+", requirement).group()).lower()


def _imports(folders: list[str]) -> set[str]:
    """Top-level names of every absolute import in the folders' Python files, outside the
    standard library and this project."""
    names = set()
    for folder in folders:
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    names |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    names.add(node.module.split(".")[0])
    return names - set(sys.stdlib_module_names) - {"i2i", "tests", "benchmarks", "__future__"}


def _undeclared(modules: set[str], declared: set[str]) -> dict[str, list[str]]:
    owners = packages_distributions()
    missing = {}
    for module in sorted(modules):
        dists = {_name(d) for d in owners.get(module, [module])}
        if not dists & declared:
            missing[module] = sorted(dists)
    return missing


def test_every_imported_package_is_declared():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_name(r) for r in project["dependencies"]}
    extras = project["optional-dependencies"]
    # An optional feature imports its extra's packages when it runs (i2i export: onnx).
    optional = {_name(r) for name, reqs in extras.items() if name != "test" for r in reqs}
    test = runtime | {_name(r) for r in extras["test"]}
    assert _undeclared(_imports(["i2i", "stages", "benchmarks"]), runtime | optional) == {}
    assert _undeclared(_imports(["tests"]), test) == {}
