"""The package layout the docs promise: the domain imports no web, worker or command code."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"fastapi", "starlette", "celery", "kombu", "uvicorn", "flower", "api", "workers"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_domain_imports_no_web_worker_or_command_code() -> None:
    offenders = {}
    for path in sorted((ROOT / "questline").rglob("*.py")):
        if "commands" in path.relative_to(ROOT / "questline").parts:
            continue
        bad = _imports(path) & FORBIDDEN
        if bad:
            offenders[str(path.relative_to(ROOT))] = sorted(bad)
    assert offenders == {}


def test_the_checker_sees_an_offending_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("import os\nfrom celery import Task\nfrom workers.publish import x\n")
    assert _imports(module) & FORBIDDEN == {"celery", "workers"}
