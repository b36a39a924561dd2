"""What `boxtasks` loads to answer, and how it ends when its reader goes away.

Each command imports what it needs and no more (issue #19: `--help` took 759 ms importing Celery,
FastAPI, SQLAlchemy and alembic). Pinned here as the modules a fresh process holds after the
command ran, never as a time: `bench/cli_speed.py` measures the times.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli import main as cli_main
from lockman import Granted, LockManager, Queued
from models import make_engine, records
from models.migrate import upgrade

REPO = Path(__file__).resolve().parents[2]
BOXTASKS = Path(sys.executable).with_name("boxtasks")

#: Never needed to read tasks or locks: the worker, the broker client, the web stack, migrations, docker.
WORKER_AND_WEB = {"celery", "kombu", "billiard", "tasks", "hosting", "fastapi", "starlette", "uvicorn", "api"}
NOT_FOR_READING = WORKER_AND_WEB | {"alembic", "docker", "requests", "flower", "tornado"}

# Run the command as the console script does (`main()`, the command line in sys.argv), stdout kept
# aside; then print the exit status and the top-level names of every module loaded, as JSON.
_PROBE = """
import contextlib, io, json, sys
sys.argv = ["boxtasks", *json.loads(sys.argv[1])]
from cli.main import main
out = io.StringIO()
try:
    with contextlib.redirect_stdout(out):
        code = main()
except SystemExit as exit:
    code = exit.code
print(json.dumps({"code": code, "out": out.getvalue(), "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _environment(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("BOXTASKS_")}
    env.update({"BOXTASKS_DATA_DIR": str(data), "BOXTASKS_DATABASE_URL": f"sqlite:///{data / 'boxtasks.db'}"})
    return env


def _loaded_by(env: dict[str, str], *args: str) -> tuple[int, str, set[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(args)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    probe = json.loads(done.stdout)
    return probe["code"], probe["out"], set(probe["modules"])


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A migrated SQLite database with its lock row, one holder and one waiter, and 300 tasks."""
    url = f"sqlite:///{tmp_path / 'boxtasks.db'}"
    upgrade(url)
    engine = make_engine(url)
    try:
        ids = [
            records.create(engine, kind="apptask", queue="apptask", args={"operation": "backup"}, app_id=f"a{i}")
            for i in range(300)
        ]
    finally:
        engine.dispose()
    manager = LockManager(url, lease=3600.0)
    try:
        manager.ensure_row()
        assert isinstance(manager.try_acquire(ids[0], {"platform": "S", "app:a": "X"}, label="apptask"), Granted)
        assert isinstance(manager.try_acquire(ids[1], {"platform": "S", "app:a": "X"}, label="apptask"), Queued)
    finally:
        manager.dispose()
    return tmp_path


def test_help_imports_nothing_of_the_engine(tmp_path: Path) -> None:
    code, out, loaded = _loaded_by(_environment(tmp_path), "--help")
    assert code == 0
    assert "task" in out and "locks" in out and "run" in out
    heavy = loaded & (NOT_FOR_READING | {"sqlalchemy", "pydantic", "pydantic_settings", "config", "models"})
    assert not heavy, sorted(heavy)


@pytest.mark.parametrize(
    "args",
    [("task", "list"), ("--json", "task", "list"), ("locks",), ("locks", "--json"), ("task", "list", "--help")],
)
def test_reading_tasks_and_locks_imports_no_worker_web_or_migrations(data: Path, args: tuple[str, ...]) -> None:
    code, out, loaded = _loaded_by(_environment(data), *args)
    assert code == 0, out
    assert "sqlalchemy" in loaded or "--help" in args
    unwanted = loaded & NOT_FOR_READING
    assert not unwanted, sorted(unwanted)
    if args[-1] != "--help":
        assert out.strip(), "the command printed nothing"


def test_the_command_table_says_what_the_modules_add() -> None:
    """`COMMANDS` (the bare entries `--help` shows) names every command the modules add, with their help."""
    parser = cli_main.build_parser([], full=True)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    added = {action.dest: action.help for action in sub._choices_actions}
    assert added == {name: command.help for name, command in cli_main.COMMANDS.items()}
    assert list(added) == list(cli_main.COMMANDS), "the order `--help` lists them in"


@pytest.mark.parametrize("name", list(cli_main.COMMANDS))
def test_each_command_is_built_beside_the_bare_others(name: str) -> None:
    parser = cli_main.build_parser([name, "--help"])
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert list(sub.choices) == list(cli_main.COMMANDS)
    full = sub.choices[name]
    # Its own parser: a handler or actions of its own, which the bare entries of the others lack.
    assert "handler" in full._defaults or any(isinstance(a, argparse._SubParsersAction) for a in full._actions)
    others = [p for n, p in sub.choices.items() if cli_main.COMMANDS[n].module != cli_main.COMMANDS[name].module]
    assert all(not p._defaults and len(p._actions) == 1 for p in others)  # only -h


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "task", "list", "--state", "failed", "--limit", "5"],
        ["backup", "list", "--json"],  # the second command of cli.platform_cmd
        ["platform", "start"],
        ["db", "upgrade"],
        ["run"],
    ],
)
def test_a_command_parses_the_same_with_or_without_the_others_loaded(argv: list[str]) -> None:
    light = cli_main.build_parser(argv).parse_args(argv)
    full = cli_main.build_parser(argv, full=True).parse_args(argv)
    assert vars(light) == vars(full)
    assert light.command == argv[0 if argv[0] != "--json" else 1]


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("task", "list"), 141),
        (("task", "list", "--json", "--limit", "300"), 141),
        (("locks",), 141),
        (("--help",), 0),  # argparse prints the help itself and drops a failed write without a word
    ],
)
def test_a_closed_pipe_ends_the_command_quietly(data: Path, args: tuple[str, ...], status: int) -> None:
    """`boxtasks task list | head -1` once head has gone: no traceback, exit 141 (128 + SIGPIPE, what
    the shell shows for `ls | head` under `pipefail`).

    The reading end is closed before the command starts, so every write meets the closed pipe: a
    reader that leaves half way is a race with the writer (here the kernel took the whole 150 KB of
    `--json` into the pipe before a reader that had read one line closed it)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [str(BOXTASKS), *args],
            cwd=REPO,
            env=_environment(data),
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        os.close(write_end)
    assert done.returncode == status, done.stderr
    assert done.stderr == ""
