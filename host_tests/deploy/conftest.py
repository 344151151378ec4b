"""Fixtures for the deploy end-to-end tests (helpers live in deploy_harness.py)."""
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from deploy_harness import VBoard  # noqa: E402


@pytest.fixture
def vboard(tmp_path, micropython):
    """A started virtual board with an empty flash directory, at its REPL prompt (so files a
    test writes into the flash run at the next reboot, not at the first boot)."""
    b = VBoard(tmp_path / "flash", tmp_path / "board.log")
    b.start()
    try:
        b.wait_log(r">>> ", timeout=60)
        yield b
    finally:
        b.stop()
