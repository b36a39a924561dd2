"""Host ports: the API's `ports` (env var -> host port) checked and turned into `portBindings`.

Two apps never get one port: every port of every binding has a row in `port_reservations`, whose
primary key (type, port) the database enforces, written in the same transaction as the bindings.
There is no check-then-write: a conflict is the constraint firing, and only then do we look up who
holds the port, to say so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, delete, insert, select
from sqlalchemy.exc import IntegrityError

from hosting.apps.manifest import Manifest, Protocol
from hosting.errors import PortConflictError, PortError
from models import PortBinding, PortReservation

logger = logging.getLogger(__name__)

MIN_HOST_PORT = 1024
MAX_HOST_PORT = 65535

#: Ports the platform keeps for itself, and why: the one list every check reads.
RESERVED_PORTS: Mapping[int, str] = {
    22: "SSH",
    25: "SMTP (mail server)",
    53: "DNS",
    80: "HTTP (reverse proxy)",
    143: "IMAP (mail server)",
    443: "HTTPS (reverse proxy)",
    465: "SMTPS (mail server)",
    587: "mail submission",
    993: "IMAPS (mail server)",
    995: "POP3S (mail server)",
    2003: "graphite (metrics)",
    2004: "graphite (metrics)",
    2375: "Docker API",
    2376: "Docker API (TLS)",
    2525: "internal SMTP relay for apps",
    3000: "platform API",
    3306: "MySQL",
    4190: "ManageSieve (mail server)",
    5432: "PostgreSQL",
    6379: "Redis",
    8000: "platform graphite web",
    9993: "internal IMAP for apps",
    11211: "memcached",
    27017: "MongoDB",
}


@dataclass(frozen=True, slots=True)
class Binding:
    """`count` host ports from `host_port` for `env_var`, mapped to the app's `container_port` ...."""

    env_var: str
    host_port: int
    count: int
    type: Protocol
    container_port: int

    @property
    def host_ports(self) -> range:
        return range(self.host_port, self.host_port + self.count)

    def docker_ports(self) -> dict[str, int]:
        """The docker SDK's `ports=` mapping for this binding: container port/proto -> host port."""
        return {f"{self.container_port + i}/{self.type}": self.host_port + i for i in range(self.count)}

    def describe(self) -> str:
        last = self.host_port + self.count - 1
        span = f"{self.host_port}" if self.count == 1 else f"{self.host_port}-{last}"
        return f"{span}/{self.type} ({self.env_var})"


def new_app_ports(manifest: Manifest, given: Mapping[str, object]) -> dict[str, object]:
    """The host ports a new app asks for: every declared port, and whatever undeclared name was given.

    A port the installer names gets that host port (None: left unbound); one left out gets its
    `defaultValue` when it is enabled by default, else stays unbound (None). The result names every
    declared port, so applying this again (the task, a retry) changes nothing.
    """
    wanted: dict[str, object] = {}
    for env_var in manifest.declared_ports():
        found = manifest.port_spec(env_var)
        assert found is not None
        spec = found[1]
        if env_var in given:
            wanted[env_var] = given[env_var]
        else:
            wanted[env_var] = spec.default_value if spec.enabled_by_default else None
    wanted.update({k: v for k, v in given.items() if k not in wanted})
    return wanted


def check_ports(manifest: Manifest, ports: Mapping[str, object]) -> list[Binding]:
    """Turn the API's `ports` into bindings, or refuse with every reason at once (PortError).

    A declared env var left out of `ports`, or given as None, is not exposed (a new app's defaults
    are filled in before, by `new_app_ports`).
    """
    problems: list[str] = []
    bindings: list[Binding] = []
    for env_var, value in sorted(ports.items()):
        found = manifest.port_spec(env_var)
        if found is None:
            declared = ", ".join(manifest.declared_ports()) or "none"
            problems.append(f"{env_var}: the manifest declares no such port (declared: {declared})")
            continue
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{env_var}: host port must be an integer, got {value!r}")
            continue
        proto, spec = found
        if spec.read_only and value != spec.default_value:
            problems.append(
                f"{env_var}: the manifest fixes this port at {spec.default_value} (readOnly); "
                f"give {spec.default_value} or leave it out"
            )
            continue
        last = value + spec.port_count - 1
        reserved = [p for p in range(value, last + 1) if p in RESERVED_PORTS]
        if reserved:
            problems.append(
                f"{env_var}: port {reserved[0]} is reserved for {RESERVED_PORTS[reserved[0]]}; choose another"
            )
            continue
        if value < MIN_HOST_PORT or last > MAX_HOST_PORT:
            span = f"{value}" if spec.port_count == 1 else f"{value}-{last} ({spec.port_count} ports)"
            problems.append(f"{env_var}: host port {span} is outside {MIN_HOST_PORT}-{MAX_HOST_PORT}")
            continue
        bindings.append(
            Binding(
                env_var=env_var,
                host_port=value,
                count=spec.port_count,
                type=proto,
                container_port=spec.container_port if spec.container_port is not None else value,
            )
        )
    problems.extend(_self_overlaps(bindings))
    if problems:
        raise PortError("ports refused: " + "; ".join(problems))
    return bindings


def _self_overlaps(bindings: Sequence[Binding]) -> list[str]:
    problems = []
    for i, a in enumerate(bindings):
        for b in bindings[i + 1 :]:
            if a.type == b.type and set(a.host_ports) & set(b.host_ports):
                problems.append(f"{a.describe()} overlaps {b.describe()} of the same app")
    return problems


def reserve(conn: Connection, app_id: str, bindings: Sequence[Binding]) -> None:
    """Replace the app's bindings and reservations with `bindings`, inside the caller's transaction.

    On a taken port this raises PortConflictError; the caller's transaction must then be rolled
    back (leaving the `with` block does that), so nothing of the request is left behind.
    """
    release(conn, app_id)
    rows = sorted(
        ({"type": b.type, "port": p, "app_id": app_id, "env_var": b.env_var} for b in bindings for p in b.host_ports),
        key=lambda r: (r["type"], r["port"]),  # one order for every writer: no lock-order deadlocks
    )
    try:
        with conn.begin_nested():
            if rows:
                conn.execute(insert(PortReservation), rows)
            if bindings:
                conn.execute(
                    insert(PortBinding),
                    [
                        {
                            "app_id": app_id,
                            "env_var": b.env_var,
                            "host_port": b.host_port,
                            "count": b.count,
                            "type": b.type,
                        }
                        for b in bindings
                    ],
                )
    except IntegrityError as err:
        raise PortConflictError(_conflict_message(conn, app_id, bindings)) from err


def release(conn: Connection, app_id: str) -> None:
    """Drop every binding and reservation of the app (uninstall, or before new ones).

    Rows are found with a plain read and deleted by primary key: a DELETE by `app_id` would take
    InnoDB gap locks, and two installs each deleting "nothing" and then inserting into the same gap
    deadlock.
    """
    held = conn.execute(
        select(PortReservation.type, PortReservation.port).where(PortReservation.app_id == app_id)
    ).all()
    if held:
        conn.execute(
            delete(PortReservation).where(
                PortReservation.type == bindparam("t"), PortReservation.port == bindparam("p")
            ),
            [{"t": row.type, "p": row.port} for row in held],
        )
    bound = conn.execute(select(PortBinding.env_var).where(PortBinding.app_id == app_id)).scalars().all()
    if bound:
        conn.execute(
            delete(PortBinding).where(PortBinding.app_id == app_id, PortBinding.env_var == bindparam("e")),
            [{"e": env_var} for env_var in bound],
        )


def claim_more(conn: Connection, app_id: str, bindings: Sequence[Binding]) -> None:
    """Reserve the ports of `bindings` the app does not hold yet, leaving its bindings as they are.

    What the front door does for a configure with new ports, with the task's row: the port is
    the app's from then on, and the task (`reserve`) makes the bindings. PortConflictError on a
    port another app holds; the caller's transaction must then be rolled back.
    """
    held = {
        (row.type, row.port)
        for row in conn.execute(
            select(PortReservation.type, PortReservation.port).where(PortReservation.app_id == app_id)
        )
    }
    rows = sorted(
        (
            {"type": b.type, "port": p, "app_id": app_id, "env_var": b.env_var}
            for b in bindings
            for p in b.host_ports
            if (b.type, p) not in held
        ),
        key=lambda r: (r["type"], r["port"]),
    )
    if not rows:
        return
    try:
        with conn.begin_nested():
            conn.execute(insert(PortReservation), rows)
    except IntegrityError as err:
        raise PortConflictError(_conflict_message(conn, app_id, bindings)) from err


def drop_unbound(conn: Connection, app_id: str) -> int:
    """Give back the app's reservations that none of its bindings uses (a claim whose task never ran)."""
    bound = {
        (row.type, port)
        for row in conn.execute(
            select(PortBinding.type, PortBinding.host_port, PortBinding.count.label("n")).where(
                PortBinding.app_id == app_id
            )
        )
        for port in range(row.host_port, row.host_port + row.n)
    }
    held = conn.execute(
        select(PortReservation.type, PortReservation.port).where(PortReservation.app_id == app_id)
    ).all()
    loose = [{"t": row.type, "p": row.port} for row in held if (row.type, row.port) not in bound]
    if loose:
        conn.execute(
            delete(PortReservation).where(
                PortReservation.type == bindparam("t"), PortReservation.port == bindparam("p")
            ),
            loose,
        )
    return len(loose)


def bindings_of(conn: Connection, app_id: str, manifest: Manifest) -> list[Binding]:
    """The app's stored bindings, with container ports from its manifest."""
    out = []
    rows = conn.execute(
        select(PortBinding.env_var, PortBinding.host_port, PortBinding.count.label("n"), PortBinding.type)
        .where(PortBinding.app_id == app_id)
        .order_by(PortBinding.env_var)
    )
    for row in rows:
        found = manifest.port_spec(row.env_var)
        container = found[1].container_port if found and found[1].container_port is not None else row.host_port
        out.append(Binding(row.env_var, row.host_port, row.n, row.type, container))
    return out


def as_ports(bindings: Sequence[Binding]) -> dict[str, int]:
    """Back to the API's shape: env var -> host port."""
    return {b.env_var: b.host_port for b in bindings}


def _conflict_message(conn: Connection, app_id: str, bindings: Sequence[Binding]) -> str:
    """Name the first taken port and its holder, read after the failed insert (the holder has committed)."""
    for b in bindings:
        holder = conn.execute(
            select(PortReservation.port, PortReservation.app_id, PortReservation.env_var)
            .where(
                PortReservation.type == b.type,
                PortReservation.port.between(b.host_port, b.host_port + b.count - 1),
                PortReservation.app_id != app_id,
            )
            .order_by(PortReservation.port)
            .limit(1)
            # A locking read sees the latest commit, not this transaction's snapshot (InnoDB).
            .with_for_update(read=True)
        ).first()
        if holder is not None:
            return (
                f"port {holder.port}/{b.type} for {b.env_var} is already used by app {holder.app_id} "
                f"({holder.env_var}); choose another host port"
            )
    wanted = ", ".join(b.describe() for b in bindings)
    return f"one of the ports {wanted} was taken by another app at the same moment; choose another host port"
