"""Every command that talks to a tracking server fails within a bounded time, naming the URI.

MLflow's HTTP client retries with exponential backoff (minutes against a dead port) and waits
up to 120 s per request. ``tracking_client`` probes an ``http(s)`` server's ``/health`` first
with ``$LTVL_TRACKING_TIMEOUT`` (default 30 s) and caps MLflow's own retries and timeout to it.
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from ltvl.util.errors import LtvlError

DEFAULT_TIMEOUT_S = 30.0


def tracking_timeout() -> float:
    raw = os.environ.get("LTVL_TRACKING_TIMEOUT", str(DEFAULT_TIMEOUT_S))
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise LtvlError(f"LTVL_TRACKING_TIMEOUT={raw!r} is not a positive number of seconds",
                        where="LTVL_TRACKING_TIMEOUT", fix="e.g. LTVL_TRACKING_TIMEOUT=60")
    return value


def check_reachable(uri: str) -> None:
    """For a server URI: answer within the timeout or raise naming it. Local stores pass."""
    if not uri.startswith(("http://", "https://")):
        return
    timeout = tracking_timeout()
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(max(1, int(timeout))))
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout) as r:
            r.read(64)
    except (urllib.error.URLError, TimeoutError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        timed_out = isinstance(reason, TimeoutError) or "timed out" in str(reason)
        what = f"within {timeout:g} s" if timed_out else f"({reason})"
        raise LtvlError(f"MLflow at {uri} did not answer {what}", where="tracking URI",
                        fix=f"check that the server runs and is reachable (curl {uri.rstrip('/')}/health), or set "
                            "LTVL_TRACKING_TIMEOUT to wait longer") from e


def store_init_lock(uri: str):
    """MLflow migrates a fresh sqlite store inside ``MlflowClient(...)``; two processes doing that at
    once collide in alembic (``table _alembic_tmp_experiments already exists``). One lock per file."""
    from contextlib import nullcontext
    from pathlib import Path

    from filelock import FileLock

    if not uri.startswith("sqlite:///"):
        return nullcontext()
    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(db) + ".init.lock")


def open_client(uri: str):
    """``MlflowClient(uri)``, one sqlite migration at a time; a store that cannot be opened (locked
    by another program, damaged, a directory without permission) is said in one line."""
    from mlflow import MlflowClient

    with store_init_lock(uri):
        try:
            client = MlflowClient(tracking_uri=uri)
            if uri.startswith("sqlite:"):
                client.search_experiments(max_results=1)  # a local store opens its file here
            return client
        except LtvlError:
            raise
        except Exception as e:  # noqa: BLE001 - sqlalchemy, sqlite and MLflow raise their own types
            text = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            locked = "locked" in text
            raise LtvlError(f"cannot open the MLflow store ({type(e).__name__}: {text})", where=uri,
                            fix="another program holds the database (close it, or wait), then run again" if locked
                            else "check the URI, the file's permissions and the disk") from e


def tracking_client(uri: str):
    """An ``MlflowClient`` for ``uri``, after :func:`check_reachable`."""
    check_reachable(uri)
    return open_client(uri)
