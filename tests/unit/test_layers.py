"""The layers point one way: the task records and the front door build no Celery app or web app on import,
and the bench scripts shadow no package of the repo (so they run without `sys.path` edits)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _imported_after(modules: list[str]) -> set[str]:
    """Top-level names of every module a fresh interpreter holds after importing `modules`."""
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(' '.join({{n.split('.')[0] for n in sys.modules}}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    return set(done.stdout.split())


def test_the_task_records_import_no_celery() -> None:
    loaded = _imported_after(["models.records"])
    assert "models" in loaded
    assert not loaded & {"celery", "kombu", "tasks"}, sorted(loaded & {"celery", "kombu", "tasks"})


@pytest.mark.parametrize(
    "module", ["frontdoor", "frontdoor.actions", "frontdoor.queries", "frontdoor.schemas", "frontdoor.tokens"]
)
def test_the_front_door_imports_no_celery_and_no_web_framework(module: str) -> None:
    loaded = _imported_after([module])
    assert "frontdoor" in loaded
    unwanted = loaded & {"celery", "kombu", "tasks", "fastapi", "starlette", "api", "cli"}
    assert not unwanted, sorted(unwanted)


def test_no_bench_script_shadows_a_package_of_the_repo() -> None:
    packages = {p.parent.name for p in REPO.glob("*/__init__.py")}
    scripts = {p.stem for p in (REPO / "bench").glob("*.py")}
    assert "tasks" in packages and "taskrig" in scripts
    assert not scripts & packages, sorted(scripts & packages)


def test_no_code_edits_sys_path() -> None:
    """Tests and benchmarks import the worker rig as `bench.taskrig`; scripts run as `python -m bench.<name>`."""
    edits = [
        f"{p.relative_to(REPO)}:{n}"
        for top in ("bench", "tests", "api", "cli", "frontdoor", "models", "tasks")
        for p in (REPO / top).rglob("*.py")
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if ("sys.path.insert" in line or "sys.path[0] =" in line or "sys.path.append" in line)
        and p != Path(__file__).resolve()
    ]
    assert edits == []


def _hosting_imports() -> dict[str, set[str]]:
    """Module -> the `hosting` modules it imports (a package's `__init__` re-exports are left out)."""
    modules = {
        ".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__"): p
        for p in (REPO / "hosting").rglob("*.py")
    }
    packages = {m for m, p in modules.items() if p.name == "__init__.py"}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name in packages:
            continue
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("hosting"):
                deps |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        graph[name] = {d for d in deps if d in modules and d not in packages and d != name}
    return graph


def test_hosting_modules_import_in_no_circle() -> None:
    graph = _hosting_imports()
    assert graph.get("hosting.apps.lifecycle")
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, "import circle: " + " -> ".join((*path[path.index(module) :], module))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())


def test_events_are_the_bottom_of_hosting() -> None:
    """Every package of `hosting` reports through `hosting.events`; it imports none of them."""
    graph = _hosting_imports()
    upward = {
        f"{m} -> {d}"
        for m, deps in graph.items()
        if m.startswith("hosting.events.")
        for d in deps
        if d.startswith(("hosting.apps", "hosting.backups", "hosting.platformops"))
    }
    assert upward == set(), sorted(upward)


def test_the_api_imports_up_front_every_module_the_front_door_defers() -> None:
    """Threads importing one import cycle at once meet half-made modules: the API imports them before serving."""
    from frontdoor.actions import DEFERRED_IMPORTS

    deferred = {
        node.module
        for path in (REPO / "frontdoor").glob("*.py")
        for function in ast.walk(ast.parse(path.read_text()))
        if isinstance(function, ast.FunctionDef)
        for node in ast.walk(function)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in {"hosting", "tasks"}
    }
    assert "hosting.apps.capabilities" in deferred, "this test reads the wrong files"
    assert deferred <= set(DEFERRED_IMPORTS), sorted(deferred - set(DEFERRED_IMPORTS))
