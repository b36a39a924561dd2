"""The app config stored with a backup: documents written before the model still read, and keep their shape."""

from __future__ import annotations

import pytest

from hosting.backups.appconfig import AppConfig, PortBindingConfig, ResourcesConfig
from hosting.errors import CorruptBackupError

#: A document as `backups.app_config` held it before the typed model (the camelCase keys written by hand).
OLD = {
    "appId": "a1",
    "appStoreId": "org.example.blog",
    "manifest": {"id": "org.example.blog", "version": "1.0.0"},
    "version": "1.0.0",
    "location": "blog",
    "runState": "stopped",
    "notes": "kept",
    "operators": ["admin"],
    "checklist": {"dns": True},
    "ports": {"SSH_PORT": 43022},
    "portBindings": {"SSH_PORT": {"hostPort": 43022, "count": 1, "type": "tcp"}},
    "resources": {"cpuShares": 512, "cpuQuota": 100, "memoryLimit": 268435456},
    "env": {"GREETING": "hi"},
    "enableBackup": True,
    "enableMailbox": False,
}


def test_an_old_document_reads_and_writes_back_unchanged() -> None:
    config = AppConfig.from_json(OLD)
    assert config.app_id == "a1" and config.run_state == "stopped" and config.location == "blog"
    assert config.port_bindings == {"SSH_PORT": PortBindingConfig(host_port=43022, count=1, type="tcp")}
    assert config.resources.as_columns() == {"cpu_shares": 512, "cpu_quota": 100, "memory_limit": 268435456}
    assert config.to_json() == OLD


def test_a_sparse_document_keeps_its_shape_and_defaults_the_rest() -> None:
    sparse = {"manifest": {"id": "x"}, "resources": {"cpuShares": 256}}
    config = AppConfig.from_json(sparse)
    assert config.to_json() == sparse  # no keys invented on the way back
    assert config.env is None and config.run_state == "running" and config.enable_backup is True
    assert config.resources.as_columns() == {"cpu_shares": 256}  # a missing limit is not reset
    assert AppConfig.from_json(None).to_json() == {} and AppConfig.from_json({}).manifest is None


def test_a_new_config_writes_every_key() -> None:
    config = AppConfig(
        app_id="a2",
        manifest={"id": "x"},
        resources=ResourcesConfig(cpu_shares=1, cpu_quota=2, memory_limit=3),
        env={},
    )
    document = config.to_json()
    assert document["appId"] == "a2" and document["resources"] == {"cpuShares": 1, "cpuQuota": 2, "memoryLimit": 3}
    assert AppConfig.from_json(document) == config


def test_a_damaged_document_is_a_corrupt_backup() -> None:
    with pytest.raises(CorruptBackupError, match="app config stored with this backup is damaged"):
        AppConfig.from_json({"ports": {"SSH_PORT": "not a port"}})
