"""The Ray a sweep starts for itself when no cluster is named, started as ``ltvl cluster up``
starts its nodes: every server on 127.0.0.1, token auth with a token only this user can read,
and Ray's files in a directory only this user can enter.

Ray alone (``ray.init()``) listens on every interface, writes its token to ``~/.ray`` readable by
all, keeps its sessions under a world-writable ``/tmp/ray``, and joins any Ray it finds running on
the machine. With ``RAY_ADDRESS`` set (``ray job submit``, or a cluster you name), the sweep joins
that cluster instead and starts nothing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ltvl.cluster.procs import proc_info, same_process

LOOPBACK = "127.0.0.1"
PREFIX = "ltvl-s-"  # /tmp/ltvl-s-XXXXXXXX: one embedded Ray's files
_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # a node IP of exactly 127.0.0.1 keeps every server on it
        "RAY_AUTH_MODE": "token"}


@contextlib.contextmanager
def ray_for_sweep(verbose: bool = False) -> Iterator[str]:
    """``ray.init`` for a sweep driver; yields where it runs ("cluster <address>" or "embedded").
    An already initialised Ray (a test, a notebook) is used as it is and left running."""
    import ray

    level = logging.INFO if verbose else logging.ERROR
    if ray.is_initialized():
        yield "the Ray already initialised in this process"
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=False, logging_level=level)
        try:
            yield f"cluster {os.environ['RAY_ADDRESS']}"
        finally:
            ray.shutdown()
        return
    with embedded_ray_env() as temp_dir:
        ray.init(address="local", _node_ip_address=LOOPBACK, dashboard_host=LOOPBACK, _temp_dir=str(temp_dir),
                 log_to_driver=False, logging_level=level)
        try:
            yield "embedded (127.0.0.1 only)"
        finally:
            ray.shutdown()


@contextlib.contextmanager
def embedded_ray_env() -> Iterator[Path]:
    """A private directory for Ray's files (the parent is 0700: Ray makes its own temp dir
    0777, and a parent nobody else can enter is what keeps others out), a 0600 token in it, and
    the environment that keeps Ray on loopback; all undone afterwards. The path is short: Ray's
    unix sockets live under it (107 bytes at most)."""
    _remove_dead_drivers_dirs()
    parent = Path(tempfile.mkdtemp(prefix=PREFIX, dir="/tmp"))  # mkdtemp: 0700
    me = proc_info(os.getpid())
    (parent / "driver").write_text(f"{os.getpid()} {me.start_ticks if me else 0}")
    token = parent / "auth_token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    env = {**_ENV, "RAY_AUTH_TOKEN_PATH": str(token)}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    _reload_ray_settings()
    try:
        yield parent / "r"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        _reload_ray_settings()
        shutil.rmtree(parent, ignore_errors=True)


def _remove_dead_drivers_dirs() -> None:
    """A driver killed with SIGKILL leaves its directory behind: the next one removes every such
    directory of this user whose recorded driver is no longer the process that made it."""
    for d in Path("/tmp").glob(f"{PREFIX}*"):
        try:
            if d.stat().st_uid != os.getuid():
                continue
            pid, ticks = (int(x) for x in (d / "driver").read_text().split())
        except (OSError, ValueError):
            continue
        if not same_process(pid, ticks):
            shutil.rmtree(d, ignore_errors=True)


def _reload_ray_settings() -> None:
    """Ray reads these variables when it is imported, and the driver imported it long before it
    knew it would start its own cluster: re-read the auth mode and token (as Ray's own tests do)
    and the cluster switch (the processes Ray starts read the environment themselves)."""
    import ray._private.ray_constants as ray_constants
    from ray._raylet import AuthenticationTokenLoader, Config

    ray_constants.ENABLE_RAY_CLUSTER = ray_constants.env_bool(ray_constants.ENABLE_RAY_CLUSTERS_ENV_VAR,
                                                              not ray_constants.IS_WINDOWS_OR_OSX)
    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()
