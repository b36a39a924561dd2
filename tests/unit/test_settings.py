"""`config.load_settings`: defaults, BOXTASKS_* overrides, and one-line errors that name the variable."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from config import ConfigError, Settings, load_settings
from config.settings import ENV_PREFIX


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No BOXTASKS_* variable from the caller's shell, and a working directory of our own."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_defaults_are_the_embedded_database_and_broker(clean_env: Path) -> None:
    s = load_settings()
    assert s.env == "development"
    assert s.database_url == ""
    assert s.effective_database_url == f"sqlite:///{clean_env.resolve() / 'var' / 'boxtasks.db'}"
    assert s.effective_broker_url == "filesystem://"
    assert s.lock_row == "main"
    assert s.lock_lease_seconds == 30.0
    assert s.heartbeat_interval == pytest.approx(10.0), "no heartbeat set: a third of the lease"


def test_the_embedded_broker_url_names_a_host_so_kombu_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    """Without a host kombu logs "No hostname was supplied" for every connection of every process."""
    from kombu.connection import Connection

    from config.celery import kombu_broker_url

    url = kombu_broker_url(load_settings())
    with caplog.at_level("WARNING", logger="kombu.connection"):
        connection = Connection(url)  # type: ignore[no-untyped-call]
        assert connection.as_uri() == "filesystem://:**@localhost//"
        connection.release()  # type: ignore[no-untyped-call]
    assert caplog.records == []


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BOXTASKS_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("BOXTASKS_LOCK_ROW", "staging")
    monkeypatch.setenv("BOXTASKS_LOCK_LEASE_SECONDS", "12.5")
    monkeypatch.setenv("BOXTASKS_HEARTBEAT_SECONDS", "2")
    monkeypatch.setenv("BOXTASKS_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")
    monkeypatch.setenv("BOXTASKS_ENV", "production")
    monkeypatch.setenv("BOXTASKS_FLOWER_PASSWORD", "a-real-secret-0f3a")
    monkeypatch.setenv("BOXTASKS_SQL_ECHO", "true")
    s = load_settings()
    assert s.effective_database_url == f"sqlite:///{(tmp_path / 'data').resolve() / 'boxtasks.db'}"
    assert s.lock_row == "staging"
    assert s.lock_lease_seconds == 12.5
    assert s.heartbeat_interval == 2.0
    assert s.effective_broker_url == "amqp://guest:guest@127.0.0.1:5672//"
    assert s.env == "production"
    assert s.sql_echo is True
    monkeypatch.setenv("BOXTASKS_DATABASE_URL", "mysql+pymysql://root@127.0.0.1:3306/boxtasks")
    assert load_settings().effective_database_url == "mysql+pymysql://root@127.0.0.1:3306/boxtasks"


def test_the_environment_is_read_when_asked_not_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXTASKS_LOCK_ROW", "first")
    assert load_settings().lock_row == "first"
    monkeypatch.setenv("BOXTASKS_LOCK_ROW", "second")
    assert load_settings().lock_row == "second"


BAD_VALUES = {
    "negative lease": ({"BOXTASKS_LOCK_LEASE_SECONDS": "-1"}, "BOXTASKS_LOCK_LEASE_SECONDS"),
    "zero lease": ({"BOXTASKS_LOCK_LEASE_SECONDS": "0"}, "BOXTASKS_LOCK_LEASE_SECONDS"),
    "lease not a number": ({"BOXTASKS_LOCK_LEASE_SECONDS": "soon"}, "BOXTASKS_LOCK_LEASE_SECONDS"),
    "lease over an hour": ({"BOXTASKS_LOCK_LEASE_SECONDS": "3601"}, "BOXTASKS_LOCK_LEASE_SECONDS"),
    "unknown database scheme": ({"BOXTASKS_DATABASE_URL": "oracle://scott:tiger@db/x"}, "BOXTASKS_DATABASE_URL"),
    "database url without scheme": ({"BOXTASKS_DATABASE_URL": "boxtasks.db"}, "BOXTASKS_DATABASE_URL"),
    "unknown broker scheme": ({"BOXTASKS_BROKER_URL": "kafka://k:9092"}, "BOXTASKS_BROKER_URL"),
    "heartbeat equals lease": (
        {"BOXTASKS_LOCK_LEASE_SECONDS": "10", "BOXTASKS_HEARTBEAT_SECONDS": "10"},
        "BOXTASKS_HEARTBEAT_SECONDS",
    ),
    "heartbeat longer than lease": ({"BOXTASKS_HEARTBEAT_SECONDS": "45"}, "BOXTASKS_HEARTBEAT_SECONDS"),
    "negative heartbeat": ({"BOXTASKS_HEARTBEAT_SECONDS": "-3"}, "BOXTASKS_HEARTBEAT_SECONDS"),
    "empty lock row": ({"BOXTASKS_LOCK_ROW": ""}, "BOXTASKS_LOCK_ROW"),
    "lock row too long": ({"BOXTASKS_LOCK_ROW": "r" * 65}, "BOXTASKS_LOCK_ROW"),
    "unknown env": ({"BOXTASKS_ENV": "staging"}, "BOXTASKS_ENV"),
}


@pytest.mark.parametrize(("env", "variable"), list(BAD_VALUES.values()), ids=list(BAD_VALUES))
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert "\n" not in message, f"more than one line: {message!r}"
    assert variable in message, f"{variable} not named in {message!r}"


def test_a_bad_database_url_does_not_echo_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOXTASKS_DATABASE_URL", "oracle://scott:s3cr3t-pw@db/x")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "s3cr3t-pw" not in str(info.value)


_FIELDS = [name for name in Settings.model_fields if name != "data_dir"]


@given(
    field=st.sampled_from(_FIELDS),
    value=st.text(st.characters(exclude_characters="\x00", exclude_categories=["Cs"]), max_size=20),
)
@settings(max_examples=150, deadline=None)
def test_any_value_loads_or_is_refused_in_one_line(field: str, value: str) -> None:
    variable = f"{ENV_PREFIX}{field.upper()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(variable, value)
        try:
            load_settings()
        except ConfigError as err:
            message = str(err)
            assert "\n" not in message and "\r" not in message, f"more than one line: {message!r}"
            assert variable in message, f"{variable} not named in {message!r}"
