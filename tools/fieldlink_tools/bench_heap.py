"""`fieldlink bench heap`: where the board's heap goes. Boots the firmware on the virtual board
the way `fieldlink.app.main()` does (config checked and unloaded, board built and unloaded,
App constructed) and prints the live heap after a collection at every step, with the cost of
each firmware module the app keeps loaded while it streams, in load order. Code compiled with
mpy-cross as on a board; the unix port's objects are 64-bit. Prints numbers, asserts nothing.

Two columns, one run each: the firmware as .mpy files in the flash (`fieldlink deploy`'s
layout: each module's bytecode is loaded into the heap) and in ROM (rom.py: bytecode runs in
place from memory-mapped flash, as frozen modules or a ROMFS partition do on a board).

The connect-time modules (handshake, opening) are listed last: they are loaded only while a
connection is being opened, on top of everything else.
"""
import argparse
import os
import re
import shutil
import subprocess
import tempfile

from . import rom, sim, upy
from . import paths
from .bench_link import LINK, SIM_ONLY

# In the order the app loads them (the link pulls in the WebSocket client when it is built).
# Not listed: fieldlink.filters (loaded only when the config names a filter), outbox_flash
# (only while the flash holds readings), the link's wifi, hello and commands steps (one use
# each, then dropped).
STREAMING = ("random", "fieldlink.proto", "fieldlink.sampling", "fieldlink.outbox",
             "fieldlink.ws.errors", "fieldlink.ws._viper", "fieldlink.ws.frames",
             "fieldlink.ws.protocol", "fieldlink.ws.client", "fieldlink.link",
             "fieldlink.link.supervisor")
CONNECTING = ("fieldlink.ws.handshake", "fieldlink.ws.opening")
SIM_OUTPUTS = dict(SIM_ONLY, outputs=[
    {"name": "fan", "type": "digital", "pin": 26, "safe": 0},
    {"name": "heater", "type": "pwm", "pin": 27, "safe": 0.0}])
_LINE = re.compile(r"^HEAP (.+) (\d+) (-?\d+)$")


def measure(board_data=SIM_ONLY, modules=STREAMING + CONNECTING, heapsize="2M", in_rom=False):
    """[(step, live heap after it, its cost)] from one run of tools/bench/heap_probe.py, with
    the firmware as .mpy files in the flash, or in_rom (rom.py)."""
    work = tempfile.mkdtemp(prefix="fl-bench-heap-")
    try:
        flash = os.path.join(work, "flash")
        conf = sim.make_config("ws://127.0.0.1:9/ws", "heap-1", "tok", dict(LINK))
        # installs fieldlink/*.mpy, or (in_rom) leaves the flash to data
        sim.prepare_flash(flash, conf, "virtual", board_data, rom=in_rom)
        env = {"FIELDLINK_BOARD": "virtual"}
        probe = paths.TOOLS / "bench" / "heap_probe.py"
        if in_rom:
            code = "import sys\nsys.argv[1:] = %r\n%s" % (list(modules), probe.read_text())
            r = subprocess.run(rom.command(rom.image(), heapsize, code),
                               env=upy.env_for((paths.FIRMWARE,), env), cwd=flash,
                               capture_output=True, text=True, timeout=60)
        else:
            r = upy.run(script=probe, path=sim.mp_dirs(), heapsize=heapsize, args=modules,
                        cwd=flash, env=env, timeout=60)
        rows = [(m.group(1), int(m.group(2)), int(m.group(3)))
                for m in map(_LINE.match, r.stdout.splitlines()) if m]
        if r.returncode != 0 or not rows:
            raise RuntimeError("heap probe failed (exit %d):\n%s%s" % (
                r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        return rows
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fieldlink bench heap",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--board", choices=("sim", "outputs", "full"), default="sim",
                    help="sim: one simulated sensor (the memory test's board); outputs: the "
                         "same with a digital and a PWM output (what the control code costs); "
                         "full: boards/virtual with its device models and outputs")
    args = ap.parse_args(argv)
    upy.find_micropython()
    data = {"sim": SIM_ONLY, "outputs": SIM_OUTPUTS}.get(args.board)
    files = measure(data)
    in_rom = dict((tag, (live, cost)) for tag, live, cost in measure(data, in_rom=True))
    print("fieldlink bench heap: board %s, live heap after gc, bytes (unix port, 64-bit)"
          % args.board)
    print("firmware as .mpy files in the flash (loaded into the heap) | in ROM (runs in "
          "place: frozen, or a ROMFS partition; `fieldlink sim --rom`)")
    print("%-36s %8s %8s   %8s %8s" % ("step", "live", "cost", "live", "cost"))
    totals = {"files": [0, 0], "rom": [0, 0]}   # [resident while streaming, connect extra]
    for tag, live, cost in files:
        rlive, rcost = in_rom.get(tag, (0, 0))
        print("%-36s %8d %8d   %8d %8d" % (tag, live, cost, rlive, rcost))
        if tag in CONNECTING:
            totals["files"][1] += cost
            totals["rom"][1] += rcost
    totals["files"][0] = files[-1][1] - totals["files"][1]
    totals["rom"][0] = in_rom[files[-1][0]][0] - totals["rom"][1]
    for name in ("files", "rom"):
        streaming, connecting = totals[name]
        print("%s: resident_streaming_b=%d connect_extra_b=%d board=%s" % (
            name, streaming, connecting, args.board))
    return 0
