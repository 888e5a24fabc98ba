"""Bad input to `ltvl ticket …` and to the `register` key: a clear error naming what and where, before any
training (#34)."""

import subprocess
import sys

import pytest

from ltvl.util.errors import LtvlError


def ltvl(*args, home):
    return subprocess.run([sys.executable, "-m", "ltvl.cli", *args], capture_output=True, text=True, timeout=120,
                          env={"HOME": str(home), "LTVL_HOME": str(home / ".ltvl"), "PATH": "/usr/bin:/bin"})


def test_ticket_commands_refuse_bad_input_with_exit_2_and_no_traceback(tmp_path):
    res = ltvl("ticket", "export", "rewind_grid", "--out", str(tmp_path / "t"), home=tmp_path)
    assert res.returncode == 2 and "--chain" in res.stderr and "Traceback" not in res.stderr
    res = ltvl("ticket", "export", "models:/no-version", "--out", str(tmp_path / "t"), home=tmp_path)
    assert res.returncode == 2 and "is not models:/NAME/VERSION" in res.stderr and "Traceback" not in res.stderr
    res = ltvl("ticket", "eval", str(tmp_path), home=tmp_path)
    assert res.returncode == 2 and "not an ltvl ticket manifest" in res.stderr and "Traceback" not in res.stderr
    res = ltvl("ticket", "verify", str(tmp_path), home=tmp_path)
    assert res.returncode == 1 and "ticket.json: unreadable" in res.stderr
    assert not (tmp_path / "t").exists()


def test_the_register_key_takes_a_boolean():
    from ltvl.plan.config import load_config

    with pytest.raises(LtvlError, match="register"):
        load_config("rewind_grid", None, ["register=maybe"])
    assert load_config("rewind_grid", None, ["register=false"]).register is False
