"""CPU and memory of an app: checked against the host, then turned into Docker's knobs.

- cpuShares: relative weight under contention (docker `cpu_shares`; cgroup v1 cpu.shares, v2 cpu.weight).
- cpuQuota: hard limit in percent of one CPU (100 = one core): `cpu_quota = pct * 1000` per
  `cpu_period = 100000` microseconds (cgroup v1 cpu.cfs_quota_us, v2 cpu.max).
- memoryLimit: bytes, swap included (memswap = memory: an app never swaps past its limit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hosting.apps.manifest import Manifest
from hosting.errors import ResourceError

MIB = 1024 * 1024
CPU_PERIOD_US = 100_000
MIN_CPU_SHARES = 2
MAX_CPU_SHARES = 262_144
DEFAULT_CPU_SHARES = 512
#: Below this, hardly any web app starts; a typo (MB for bytes) is the likelier cause.
MIN_MEMORY = 32 * MIB
#: For apps whose manifest names no memoryLimit.
DEFAULT_MEMORY = 256 * MIB
#: Upper bounds where the Docker host is not known (the front doors): the most boxtasks accepts at
#: all. The task checks again against the Docker host's own CPUs and memory when it runs.
MAX_CPUS = 1024
MAX_CPU_QUOTA = 100 * MAX_CPUS
MAX_MEMORY = 1 << 50


@dataclass(frozen=True, slots=True)
class HostCapacity:
    """What the Docker host has: the upper bounds of cpuQuota and memoryLimit."""

    ncpu: int
    memory: int


@dataclass(frozen=True, slots=True)
class Limits:
    cpu_shares: int
    cpu_quota: int
    memory_limit: int

    def docker_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for docker's `containers.create` and `container.update`."""
        return {
            "cpu_shares": self.cpu_shares,
            "cpu_period": CPU_PERIOD_US,
            "cpu_quota": self.cpu_quota * CPU_PERIOD_US // 100,
            "mem_limit": self.memory_limit,
            "memswap_limit": self.memory_limit,
        }

    def as_options(self) -> dict[str, int]:
        """Back to the API's names."""
        return {"cpuShares": self.cpu_shares, "cpuQuota": self.cpu_quota, "memoryLimit": self.memory_limit}


def check_limits(
    manifest: Manifest,
    host: HostCapacity | None,
    *,
    cpu_shares: int | None = None,
    cpu_quota: int | None = None,
    memory_limit: int | None = None,
    current: Limits | None = None,
) -> Limits:
    """Fill what was not given from `current` (or the defaults), then check each bound.

    `host` None (the front doors, which cannot ask the Docker host): the upper bounds are the
    most boxtasks accepts at all, and the messages say so instead of naming host figures.
    Booleans are not numbers here. Every problem is reported at once, each with its allowed range.
    """
    given = {"cpuShares": cpu_shares, "cpuQuota": cpu_quota, "memoryLimit": memory_limit}
    not_int = [f"{k} must be an integer, got {v!r}" for k, v in given.items() if v is not None and not _is_int(v)]
    if not_int:
        raise ResourceError("resources refused: " + "; ".join(not_int))
    max_quota = 100 * host.ncpu if host is not None else MAX_CPU_QUOTA
    shares = cpu_shares if cpu_shares is not None else (current.cpu_shares if current else DEFAULT_CPU_SHARES)
    quota = cpu_quota if cpu_quota is not None else (current.cpu_quota if current else max_quota)
    default_memory = manifest.memory_limit or DEFAULT_MEMORY
    memory = memory_limit if memory_limit is not None else (current.memory_limit if current else default_memory)

    problems = []
    if not MIN_CPU_SHARES <= shares <= MAX_CPU_SHARES:
        problems.append(f"cpuShares {shares} is outside {MIN_CPU_SHARES}-{MAX_CPU_SHARES} (a relative weight)")
    if not 1 <= quota <= max_quota:
        cpus = f"this host has {host.ncpu} CPUs" if host is not None else f"boxtasks allows at most {MAX_CPUS}"
        problems.append(f"cpuQuota {quota} is outside 1-{max_quota} (percent of one CPU; {cpus})")
    floor = max(MIN_MEMORY, manifest.memory_limit)
    if memory < floor:
        why = "the app's manifest asks for at least that" if floor > MIN_MEMORY else "the smallest sane limit"
        problems.append(f"memoryLimit {memory} bytes is below {floor} bytes ({floor // MIB} MiB, {why})")
    elif host is not None and memory > host.memory:
        problems.append(f"memoryLimit {memory} bytes is more than the host has ({host.memory} bytes)")
    elif host is None and memory > MAX_MEMORY:
        problems.append(f"memoryLimit {memory} bytes is more than boxtasks allows ({MAX_MEMORY} bytes)")
    if problems:
        raise ResourceError("resources refused: " + "; ".join(problems))
    return Limits(cpu_shares=shares, cpu_quota=quota, memory_limit=memory)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
