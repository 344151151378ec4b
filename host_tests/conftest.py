"""Shared fixtures: the MicroPython interpreter, firmware on sys.path, free ports."""
import os
import socket
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
# Firmware pure cores are imported directly by CPython tests; dual tests use dualsupport.
sys.path.insert(0, str(ROOT / "firmware"))
sys.path.insert(0, str(HERE))

from fieldlink_tools import upy  # noqa: E402


@pytest.fixture(scope="session")
def micropython():
    """Path of the MicroPython unix port. Missing is a failure, never a skip."""
    try:
        return upy.find_micropython()
    except upy.MicroPythonMissing as e:
        pytest.fail(str(e))


@pytest.fixture
def run_mp(micropython):
    """run_mp(code=... | script=..., path=[...], heapsize=...) -> CompletedProcess."""
    def _run(**kw):
        return upy.run(**kw)
    return _run


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def port():
    return free_port()
