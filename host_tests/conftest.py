"""Shared fixtures: the MicroPython interpreter, firmware on sys.path, free ports, PostgreSQL."""
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
from pg_support import pg_database, pg_server  # noqa: E402,F401


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


# No "free port" helper: a port found free and released can be taken by the other xdist worker
# before the test binds it. Servers bind port 0 and report theirs; refused_port keeps its
# socket bound.
@pytest.fixture
def refused_port():
    """A port nothing listens on, so connecting to it is refused (ECONNREFUSED). The socket
    stays bound (not listening) for the whole test: a port merely found free and released
    could be taken by a server in the other xdist worker before the test connects."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


# Real-board mode: `pytest --port /dev/ttyUSB0 --board esp32_devkitc` runs the tests marked
# `real_board` against an ESP32 on that port (docs/deploy.md); without --port they skip.
def pytest_addoption(parser):
    g = parser.getgroup("fieldlink real board")
    g.addoption("--port", dest="real_port", default=None,
                help="serial port of a real MicroPython board for the real_board tests")
    g.addoption("--board", dest="real_board", default="esp32_devkitc",
                help="board name (boards/NAME) of the board on --port")
    g.addoption("--board-config", dest="real_board_config", default=None,
                help="config.json for the real board (Wi-Fi, url, device_id, token)")


def pytest_configure(config):
    config.addinivalue_line("markers", "real_board: needs a real board (pytest --port PORT)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("real_port"):
        return
    skip = pytest.mark.skip(reason="real-board test: give --port /dev/ttyUSB0 --board NAME")
    for item in items:
        if "real_board" in item.keywords:
            item.add_marker(skip)
