"""`fieldlink bench heap`: where the board's heap goes. Boots the firmware on the virtual board
the way `fieldlink.app.main()` does (config checked and unloaded, board built and unloaded,
App constructed) and prints the live heap after a collection at every step, with the cost of
each firmware module the app keeps loaded while it streams, in load order. Code compiled with
mpy-cross as on a board; the unix port's objects are 64-bit. Prints numbers, asserts nothing.

One column, one run each, per binary (--micropython, repeatable) and placement (--placement):
the firmware as .mpy files in the flash (`fieldlink deploy`'s layout: each module's bytecode
is loaded into the heap), in a ROMFS image (rom.py: bytecode runs in place from memory-mapped
flash, as from a board's ROMFS partition) or frozen into the binary (tools/build_micropython.py:
bytecode, constants and qstrs all in the binary's read-only data). Each cell: live heap, and in
brackets what the step added.

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
from .bench_link import LINK, PLACED, SIM_ONLY, add_column_arguments, columns, key, using

# In the order the app loads them (the link pulls in the WebSocket client when it is built).
# Not listed: fieldlink.filters (loaded only when the config names a filter), outbox.flash
# (only while the flash holds readings), outbox.boot (once, at boot), the link's wifi, hello
# and commands steps (one use each, then dropped).
STREAMING = ("random", "fieldlink.proto", "fieldlink.sampling", "fieldlink.outbox",
             "fieldlink.ws.errors", "fieldlink.ws._viper", "fieldlink.ws.frames",
             "fieldlink.ws.protocol", "fieldlink.ws.client", "fieldlink.link",
             "fieldlink.link.supervisor")
CONNECTING = ("fieldlink.ws.handshake", "fieldlink.ws.opening")
SIM_OUTPUTS = dict(SIM_ONLY, outputs=[
    {"name": "fan", "type": "digital", "pin": 26, "safe": 0},
    {"name": "heater", "type": "pwm", "pin": 27, "safe": 0.0}])
_LINE = re.compile(r"^HEAP (.+) (\d+) (-?\d+)$")


def measure(board_data=SIM_ONLY, modules=STREAMING + CONNECTING, heapsize="2M",
            placement="files"):
    """[(step, live heap after it, its cost)] from one run of tools/bench/heap_probe.py on
    $MICROPYTHON's binary, with the firmware as .mpy files in the flash, in ROM (rom.py) or
    frozen into the binary."""
    in_rom = placement == "rom"
    work = tempfile.mkdtemp(prefix="fl-bench-heap-")
    try:
        flash = os.path.join(work, "flash")
        conf = sim.make_config("ws://127.0.0.1:9/ws", "heap-1", "tok", dict(LINK))
        # installs fieldlink/*.mpy, or (in_rom) leaves the flash to data
        sim.prepare_flash(flash, conf, "virtual", board_data, rom=placement != "files")
        env = {"FIELDLINK_BOARD": "virtual"}
        probe = paths.TOOLS / "bench" / "heap_probe.py"
        if in_rom:
            code = "import sys\nsys.argv[1:] = %r\n%s" % (list(modules), probe.read_text())
            r = subprocess.run(rom.command(rom.image(), heapsize, code),
                               env=upy.env_for((paths.FIRMWARE,), env), cwd=flash,
                               capture_output=True, text=True, timeout=60)
        else:
            path = sim.mp_dirs() if placement == "files" else (paths.FIRMWARE,)
            r = upy.run(script=probe, path=path, heapsize=heapsize, args=modules,
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
    add_column_arguments(ap)
    args = ap.parse_args(argv)
    data = {"sim": SIM_ONLY, "outputs": SIM_OUTPUTS}.get(args.board)
    print("fieldlink bench heap: board %s, live heap after gc, bytes; columns:" % args.board)
    cols = columns(args, print)
    runs = []
    for binary, label, placement in cols:
        with using(binary):
            runs.append(dict((tag, (live, cost)) for tag, live, cost in
                             measure(data, placement=placement)))
    steps = [tag for tag in runs[0]]
    w = max(16, *(len(c[1]) + 1 for c in cols))
    print("%-36s" % "step" + "".join("%*s" % (w, c[1]) for c in cols))
    print("%-36s" % "" + "".join("%*s" % (w, PLACED[c[2]]) for c in cols))
    for tag in steps:
        print("%-36s" % tag + "".join(
            "%*s" % (w, "%d (%+d)" % r[tag] if tag in r else "-") for r in runs))
    pairs = []
    for (binary, label, placement), r in zip(cols, runs):
        connecting = sum(r[t][1] for t in CONNECTING if t in r)
        pairs += ["%s=%d" % (key("resident_streaming_b", label, placement),
                             r[steps[-1]][0] - connecting),
                  "%s=%d" % (key("connect_extra_b", label, placement), connecting)]
    print(" ".join(pairs) + " board=%s" % args.board)
    return 0
