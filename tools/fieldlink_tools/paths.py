"""Where the project's parts live on disk (the tools run from an editable install)."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = ROOT / "firmware"
BOARDS = ROOT / "boards"
TOOLS = ROOT / "tools"
# MicroPython modules that stand in for the ESP32's built-ins on the virtual board
# (machine, network, esp32) and the simulated devices behind them. Never copied to a board.
VBOARD_MP = TOOLS / "vboard"
VAR = ROOT / "var"
