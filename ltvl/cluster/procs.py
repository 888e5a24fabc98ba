"""What a group of local processes is and which TCP ports it listens on, read from Linux /proc.

``ltvl cluster`` starts every service in its own session (process group), records the group
leaders, and uses this module to stop exactly those groups and to prove that none of their
sockets listens on a public address. /proc is read directly: the project has no psutil, and
``ss``/``lsof`` are not on every machine.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import time
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
KILL_WAIT_S = 10  # after SIGKILL, how long a member may take to leave /proc


@dataclass(frozen=True)
class ProcInfo:
    pid: int
    pgid: int
    start_ticks: int  # start time since boot: a recycled PID has a different one
    name: str
    ppid: int = 0


@dataclass(frozen=True)
class Listener:
    pid: int
    name: str
    address: str
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.address).is_loopback or self.address.startswith("::ffff:127.")

    def __str__(self) -> str:
        return f"{self.name}[{self.pid}] {self.address}:{self.port}"


def proc_info(pid: int) -> ProcInfo | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # comm sits in parentheses and may hold spaces: split after the last ')'
    name = stat[stat.index("(") + 1: stat.rindex(")")]
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] == "Z":  # a zombie holds nothing
        return None
    return ProcInfo(pid, int(fields[2]), int(fields[19]), name, int(fields[1]))


def all_procs() -> list[ProcInfo]:
    return [info for d in PROC.iterdir() if d.name.isdigit() and (info := proc_info(int(d.name))) is not None]


def group_members(pgid: int) -> list[ProcInfo]:
    return [info for info in all_procs() if info.pgid == pgid]


def descendants(pid: int) -> list[ProcInfo]:
    """Every live descendant of ``pid`` (children, their children, …)."""
    children: dict[int, list[ProcInfo]] = {}
    for info in all_procs():
        children.setdefault(info.ppid, []).append(info)
    out, todo = [], list(children.get(pid, []))
    while todo:
        info = todo.pop()
        out.append(info)
        todo.extend(children.get(info.pid, []))
    return sorted(out, key=lambda i: i.pid)


def same_process(pid: int, start_ticks: int) -> bool:
    """Whether ``pid`` is still the process recorded at start (not a recycled PID)."""
    info = proc_info(pid)
    return info is not None and info.start_ticks == start_ticks


def _decode(hex_addr: str) -> tuple[str, int]:
    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    # /proc/net/tcp* prints each 32-bit word in host (little-endian) order
    raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
    return socket.inet_ntop(family, raw), int(port, 16)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    out = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] == "0A":  # TCP_LISTEN
                out[int(f[9])] = _decode(f[1])
    return out


def listeners(pids: list[int]) -> list[Listener]:
    """Every TCP socket in LISTEN state that one of ``pids`` holds open."""
    inodes = _listening_inodes()
    out = []
    for pid in pids:
        info = proc_info(pid)
        try:
            fds = list((PROC / str(pid) / "fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:[") and (inode := int(target[8:-1])) in inodes:
                addr, port = inodes[inode]
                out.append(Listener(pid, info.name if info else "?", addr, port))
    return sorted(set(out), key=lambda s: (s.port, s.pid))


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_group(pid: int, start_ticks: int, grace_s: float = 30) -> bool:
    """SIGTERM the recorded leader's whole group at once (each member shuts down in parallel:
    a ``ray start --block`` leader that stops its children one by one took 30 s after a few
    jobs), wait for the group to go, then SIGKILL whatever is left. Returns whether the leader
    was running. Never signals a process that is not the recorded one or one of its group."""
    info = proc_info(pid)
    if info is not None and info.start_ticks != start_ticks:
        return False  # the PID was recycled, so our group is long gone (see below): touch nothing
    # The group id is the leader's PID (each service starts in its own session). Linux never
    # hands out a PID that is still a live group's id, so members found here are ours even when
    # the leader itself already died.
    # A member may fork while the group shuts down (a raylet restarting a worker): each newcomer
    # gets SIGTERM as soon as it is seen, and once the grace is over, SIGKILL goes out until the
    # group is really empty, so that no member outlives the return.
    termed: set[int] = set()
    deadline = time.time() + grace_s
    while (members := group_members(pid)) and time.time() < deadline:
        for p in members:
            if p.pid not in termed:
                _signal(p.pid, signal.SIGTERM)
                termed.add(p.pid)
        time.sleep(0.2)
    deadline = time.time() + KILL_WAIT_S
    while (members := group_members(pid)) and time.time() < deadline:
        for p in members:
            _signal(p.pid, signal.SIGKILL)
        time.sleep(0.05)
    return info is not None
