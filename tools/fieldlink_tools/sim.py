"""Run the fieldlink firmware from firmware/ unmodified on the virtual board: the MicroPython
unix port, a directory as its flash (config.json, board.json, the outbox, the `fieldlink` package
compiled with mpy-cross at fieldlink/*.mpy, where `fieldlink deploy` puts it on a board, and
tools/vboard's machine/network/esp32 stand-ins, compiled, in .vboard/) and an ESP32-sized heap.

    fieldlink sim --url ws://127.0.0.1:8765/ws [--device-id ID] [--token T] [--set key=value]

With --rom the package and the stand-ins run from a ROMFS image mapped into the board's
memory instead (rom.py), as on a board with the firmware frozen in or in a ROMFS partition.

config.json is written from the arguments and the package refreshed from the project's
firmware/ on every start; the outbox in the flash directory survives, so a restart is a
reboot. When the firmware resets (machine.reset: exit status 75; watchdog: 76) the
interpreter is started again, like a board rebooting; after machine.deepsleep(ms) (77) it is
started again ms later (times sleep_scale, $FIELDLINK_SIM_SLEEP_SCALE: tests compress time)
with reset cause DEEPSLEEP_RESET and wake reason TIMER_WAKE. RTC memory (a file in the flash,
tools/vboard/_machine_sys.py) survives those restarts; a power-on (start()) clears it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

from . import paths, upy

EXIT_RESET = 75      # machine.reset() on the virtual board
EXIT_WATCHDOG = 76   # the virtual board's watchdog bit
EXIT_DEEPSLEEP = 77  # machine.deepsleep(ms): "vboard: deepsleep MS ms" said before it
_WDT_LINE = b"vboard: WDT timeout"
_SLEEP_LINE = b"vboard: deepsleep "
RTC_FILE = ".vboard-rtc"   # RTC memory in the flash dir (tools/vboard/_machine_sys.py)
TIMER_WAKE = 4
PACKAGE = "fieldlink"
VBOARD_DIR = ".vboard"   # in the flash, on the path: the stand-ins (install_vboard)
STAMP = ".sim-stamp"   # in an installed copy: what it was copied from (_install)
# The heap the full virtual board gets unless told otherwise. `fieldlink bench link` finds the
# smallest working heap: with the firmware as .mpy files in the flash (their code loaded into
# the heap, ~70 KB of it on the 64-bit unix port), 136k for the simulated-sensor board of the
# tests and 176k for the full virtual board (four sensors and their register-level device
# models, on the same heap); with the firmware in ROM (--rom, rom.py), 96k for the tests'
# board. The full board also has four outputs, whose stand-in machine.Pin/PWM are Python here
# (C on an ESP32, no heap): 256k leaves it a margin like an ESP32 has. See
# docs/architecture.md (Memory).
DEFAULT_HEAP = "256k"

# Defaults that differ from the firmware's: the virtual board has no real NTP need (the
# collector's welcome time is used), samples faster, and retries sooner.
SIM_DEFAULTS = {
    "wifi_ssid": "fieldlink-sim",
    "wifi_password": "sim-password",
    "ntp_host": None,
    "sample_interval_s": 2,
    "backoff_base_s": 0.5,
    "backoff_max_s": 10,
    "health_interval_s": 30,
    "batch_max": 10,   # smaller messages: a fragmented small heap still finds room for them
}


def parse_set(items):
    """["key=value", ...] -> dict; values are JSON when they parse (numbers, null, objects)."""
    out = {}
    for item in items or ():
        if "=" not in item:
            raise SystemExit("fieldlink sim: --set needs key=value, got %r" % item)
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def make_config(url, device_id="sim-1", token="sim-token", sets=None):
    cfg = dict(SIM_DEFAULTS)
    cfg.update({"device_id": device_id, "token": token, "url": url})
    cfg.update(sets or {})
    return cfg


def prepare_flash(flash, cfg, board="virtual", board_data=None, compiled=True, vboard=True,
                  rom=False):
    """Write config.json and the board file (boards/BOARD/board.json, or board_data), and
    install the firmware package (install_firmware) and, for a board run with mp_dirs(), the
    virtual-board stand-ins (install_vboard) into the flash. rom: both run from the ROM image
    instead (rom.py), so copies this module installed earlier are taken out of the flash,
    where they would come first on sys.path; files not installed by it stay."""
    os.makedirs(flash, exist_ok=True)
    with open(os.path.join(flash, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if board_data is not None:
        with open(os.path.join(flash, "board.json"), "w") as f:
            json.dump(board_data, f)
    else:
        src = paths.BOARDS / board / "board.json"
        if not src.exists():
            raise SystemExit("fieldlink sim: no board file %s" % src)
        shutil.copyfile(src, os.path.join(flash, "board.json"))
    if rom:
        for d in (PACKAGE, VBOARD_DIR):
            if os.path.exists(os.path.join(flash, d, STAMP)):
                shutil.rmtree(os.path.join(flash, d))
        return
    install_firmware(flash, compiled)
    if vboard:
        install_vboard(flash)


def _mpy_cross():
    return shutil.which("mpy-cross", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpy-cross")


def _sources(src):
    return sorted(p for p in src.rglob("*.py") if "__pycache__" not in p.parts)


def _sources_hash(h, src):
    for f in _sources(src):
        h.update(str(f.relative_to(src)).encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def _compiled(src, name):
    """src's .py files compiled with mpy-cross into var/mpy/HASH/NAME/ (HASH: the sources, the
    compiler's version, NAME); None without mpy-cross. The source name in each .mpy is its
    path in the flash, NAME/rel.mpy (as `fieldlink deploy` compiles): tracebacks name the file
    really there, and it is the same string as __file__, so one qstr per module, not two."""
    import hashlib
    exe = _mpy_cross()
    if exe is None:
        return None
    ver = subprocess.run([exe, "--version"], capture_output=True, text=True).stdout
    # "-s=mpy": entries compiled with other source names (`-s fieldlink/x.py`) are not reused
    dest = paths.VAR / "mpy" / _sources_hash(
        hashlib.sha1(("%s\0%s\0-s=mpy\0" % (ver, name)).encode()), src)
    if dest.exists():
        return dest
    tmp = dest.with_name(dest.name + ".tmp%d" % os.getpid())
    shutil.rmtree(tmp, ignore_errors=True)
    for f in _sources(src):
        rel = name + "/" + f.relative_to(src).with_suffix(".mpy").as_posix()
        out = tmp / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        # portable bytecode, no -march: the viper code is compiled by the board at import
        subprocess.run([exe, "-o", str(out), "-s", rel, str(f)],
                       capture_output=True, text=True, check=True)
    try:
        os.rename(tmp, dest)
    except OSError:  # another process (xdist worker) finished first: same content
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        _prune_cache(dest.parent)
    return dest


def _prune_cache(root, keep=12, age_s=24 * 3600, files=False):
    """A new entry per source change adds up (~100 KB each): remove entries (and temporary
    ones left by a crash) older than a day beyond the newest `keep`. A day: a process still
    running an older build (a long soak) finds its entry; each board start looks its entry
    up again and rebuilds it if it is gone. Entries are directories, or files with `files`
    (rom.py's images)."""
    try:
        entries = sorted(((e.stat().st_mtime, e.path) for e in os.scandir(root)
                          if (e.is_file() if files else e.is_dir())), reverse=True)
    except OSError:
        return
    old = time.time() - age_s
    for mtime, path in entries[keep:]:
        if mtime < old:
            if files:
                try:
                    os.remove(path)
                except OSError:
                    pass
            else:
                shutil.rmtree(path, ignore_errors=True)


def compile_firmware():
    """The `fieldlink` package compiled with mpy-cross, as `fieldlink deploy` builds it for a
    board (boot.py and main.py stay source, as on a board). Compiling from source on the
    board itself needs more heap than an ESP32 has to spare. Cached under var/mpy/; returns
    the cache directory (it holds fieldlink/...mpy), or None without mpy-cross.
    install_firmware copies it into a flash."""
    return _compiled(paths.FIRMWARE / PACKAGE, PACKAGE)


def compile_vboard():
    """tools/vboard's stand-ins compiled like the firmware, into var/mpy/HASH/.vboard/."""
    return _compiled(paths.VBOARD_MP, VBOARD_DIR)


def _install(target, src, stamp):
    """Replace the directory target with a copy of src unless its STAMP file says stamp."""
    try:
        with open(os.path.join(target, STAMP)) as f:
            if f.read() == stamp:
                return target
    except OSError:
        pass
    new = target + ".new"   # a copy cut short is never taken for the real one: no stamp yet
    shutil.rmtree(new, ignore_errors=True)
    shutil.copytree(src, new, ignore=shutil.ignore_patterns("__pycache__"))
    with open(os.path.join(new, STAMP), "w") as f:
        f.write(stamp)
    shutil.rmtree(target, ignore_errors=True)
    os.rename(new, target)
    return target


def install_firmware(flash, compiled=True):
    """Put the `fieldlink` package into the flash directory the way `fieldlink deploy` lays it
    out on a board (fieldlink/*.mpy; fieldlink/*.py with compiled=False, like deploy --source),
    so the board imports it through sys.path's '' entry and __file__ is `fieldlink/log.mpy`.
    Called at every board start: the package is replaced whole when the stamp file in it
    (STAMP: which cache entry or sources it came from) differs, so a flash reused across
    restarts, power cuts or a --source run never runs stale or the other kind of code. A
    deploy into the flash (the pty board) removes the stamp with the other files it does not
    know, so the next `fieldlink sim` start puts the project's firmware back. Returns the
    package directory."""
    import hashlib
    root = compile_firmware() if compiled else None
    if root is not None:
        return _install(os.path.join(flash, PACKAGE), root / PACKAGE, "mpy %s\n" % root.name)
    # --source, or no mpy-cross: the sources, as deploy --source copies them
    src = paths.FIRMWARE / PACKAGE
    return _install(os.path.join(flash, PACKAGE), src,
                    "py %s\n" % _sources_hash(hashlib.sha1(), src))


def install_vboard(flash):
    """The virtual board's stand-ins for the ESP32's C modules (machine, network, esp32, the
    device models) into FLASH/.vboard, compiled: short names on the path (.vboard/machine.mpy,
    not /.../tools/vboard/machine.py) and no compiling on the board, so less of their cost
    lands in the heap than a board, where they cost none, would pay. Not firmware: deploy
    never sees them. Refreshed like install_firmware; the sources without mpy-cross."""
    import hashlib
    root = compile_vboard()
    if root is not None:
        return _install(os.path.join(flash, VBOARD_DIR), root / VBOARD_DIR,
                        "mpy %s\n" % root.name)
    return _install(os.path.join(flash, VBOARD_DIR), paths.VBOARD_MP,
                    "py %s\n" % _sources_hash(hashlib.sha1(), paths.VBOARD_MP))


def mp_dirs():
    """The board's MICROPYPATH after .frozen (upy.mp_path), for a flash made by prepare_flash:
    the virtual-board stand-ins (relative: FLASH/.vboard, install_vboard), then firmware/ for
    boot.py and main.py (a test may put its own into the flash). The firmware package is found
    before all of them, in the flash: the unix port's sys.path starts with '' (the working
    directory, i.e. the flash) as an ESP32's does, when it runs `-c` code as SimBoard does (a
    script's own directory takes that place instead: tools/bench/heap_probe.py sets it back).
    An empty MICROPYPATH entry is no way to add '': the unix port drops a leading one."""
    return (VBOARD_DIR, paths.FIRMWARE)


class SimBoard:
    """One virtual board process at a time, restarted on reset, output appended to a log.

    For tests and tools: start(), power_cut() (kill -9, no restart), stop(), lines(),
    wait_for_line(substring).
    """

    BOOT = "import boot\nimport main\n"

    def __init__(self, flash, cfg, board="virtual", heapsize=DEFAULT_HEAP, log_path=None,
                 echo=False, env=None, compiled=True, board_data=None, rom=False,
                 frozen=False, flash_bytes=None, sleep_scale=None, sleeps=None):
        self.flash = str(flash)
        self.cfg = cfg
        self.board = board
        self.heapsize = heapsize
        self.log_path = str(log_path or os.path.join(self.flash, "..", os.path.basename(
            self.flash.rstrip("/")) + ".log"))
        self.echo = echo
        self.env = dict(env or {})
        self.compiled = compiled
        self.board_data = board_data
        self.rom = rom           # run the firmware from the ROM image (rom.py)
        self.frozen = frozen     # the firmware frozen into the binary (upy.check_frozen)
        self.image = None
        self.path = None
        if flash_bytes:
            # a flash of that size, as os.statvfs tells the firmware (tools/vboard/_vflash.py)
            self.env["FIELDLINK_VBOARD_FLASH_BYTES"] = str(int(flash_bytes))
            self.BOOT = "import _vflash\n" + SimBoard.BOOT
        self.proc = None
        self.boots = 0
        self.exits = []          # exit statuses seen
        self.awake = []          # (exit status, seconds the process ran), one per process
        if sleep_scale is None:
            sleep_scale = float(os.environ.get("FIELDLINK_SIM_SLEEP_SCALE") or 1.0)
        self.sleep_scale = sleep_scale   # deep sleep lasts ms * this
        self.sleeps = sleeps     # after this many deep sleeps the board stays asleep (tests)
        self._stop = threading.Event()
        self._thread = None
        self._lock = threading.Lock()

    # ---- life ----

    def start(self):
        if self.frozen:
            upy.check_frozen()
        prepare_flash(self.flash, self.cfg, self.board, self.board_data, self.compiled,
                      rom=self.rom or self.frozen)
        if self.frozen:
            self.path = (paths.FIRMWARE,)   # boot.py and main.py; the rest is in the binary
        elif self.rom:
            from . import rom
            self.image = rom.image()
            self.path = (paths.FIRMWARE,)   # boot.py and main.py; the rest is in the ROM
        else:
            self.path = mp_dirs()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _spawn(self, cause):
        env = dict(self.env)
        env["FIELDLINK_VBOARD_RESET_CAUSE"] = cause
        if cause == "DEEPSLEEP_RESET":
            env["FIELDLINK_VBOARD_WAKE_REASON"] = str(TIMER_WAKE)
        elif cause == "PWRON_RESET":
            try:   # a power cut clears RTC memory
                os.remove(os.path.join(self.flash, RTC_FILE))
            except OSError:
                pass
        env["FIELDLINK_BOARD"] = self.board
        # A session of its own: a terminal's Ctrl-C (SIGINT to its foreground process group)
        # reaches only the tool, which stops the board once (stop()); a second SIGINT would
        # interrupt the board's last flush.
        io = dict(cwd=self.flash, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                  stdin=subprocess.DEVNULL, start_new_session=True)
        if self.rom:
            from . import rom
            p = subprocess.Popen(rom.command(self.image, self.heapsize, self.BOOT),
                                 env=upy.env_for(self.path, env), **io)
        else:
            p = upy.popen(code=self.BOOT, path=self.path, heapsize=self.heapsize, env=env,
                          **io)
        self.boots += 1
        return p

    def _loop(self):
        cause = "PWRON_RESET"
        while not self._stop.is_set():
            with self._lock:
                if self._stop.is_set():
                    return
                self.proc = p = self._spawn(cause)
                t0 = time.monotonic()
            wdt_fired = False
            sleep_ms = None
            with open(self.log_path, "ab", buffering=0) as log:
                for line in p.stdout:
                    log.write(line)
                    wdt_fired = wdt_fired or line.startswith(_WDT_LINE)
                    if line.startswith(_SLEEP_LINE):
                        try:
                            sleep_ms = int(line[len(_SLEEP_LINE):].split()[0])
                        except (ValueError, IndexError):
                            sleep_ms = 0
                    if self.echo:
                        sys.stdout.write(line.decode("utf-8", "replace"))
                        sys.stdout.flush()
            rc = p.wait()
            self.awake.append((rc, time.monotonic() - t0))
            self.exits.append(rc)
            if rc == EXIT_DEEPSLEEP:
                cause = "DEEPSLEEP_RESET"
                if self.sleeps is not None and self.exits.count(EXIT_DEEPSLEEP) >= self.sleeps:
                    return
                # asleep: stop() and power_cut() end the wait at once
                if self._stop.wait(max(0, sleep_ms or 0) / 1000 * self.sleep_scale):
                    return
            elif rc == EXIT_RESET:
                cause = "HARD_RESET"
            elif rc == EXIT_WATCHDOG or (rc == -signal.SIGTERM and wdt_fired):
                # the stand-in WDT cannot set an exit status from its thread: it says so on
                # the console and SIGTERMs the interpreter (tools/vboard/machine.py WDT)
                cause = "WDT_RESET"
            else:
                return  # the firmware ended (config error, Ctrl-C, crash of the port)

    def power_cut(self):
        """kill -9: what a power cut does to a board. The board stays off until start()."""
        self._stop.set()
        with self._lock:
            p = self.proc
        if p is not None and p.poll() is None:
            p.kill()
        self._join()

    def stop(self, timeout=20):
        """Ctrl-C (one SIGINT: the firmware saves its outbox to flash and ends), then kill if
        it does not end (a power cut: what was in RAM is lost)."""
        self._stop.set()
        with self._lock:
            p = self.proc
        if p is not None and p.poll() is None:
            from . import ctrl_c
            deadline = time.monotonic() + timeout
            try:
                # at a point where it cannot break the interpreter; while Ctrl-C is off (the
                # firmware saving its outbox, or the interpreter not started yet) only wait
                while ctrl_c.interrupt(p.pid) is None and p.poll() is None and \
                        time.monotonic() < deadline:
                    time.sleep(0.05)
            except ProcessLookupError:
                pass
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
        self._join()

    def _join(self):
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self.proc is not None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def running(self):
        return self._thread is not None and self._thread.is_alive()

    def wait(self):
        """Until the firmware ends for good; returns the last exit status."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)
        return self.exits[-1] if self.exits else None

    # ---- looking inside ----

    def text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def lines(self, contains=None):
        return [ln for ln in self.text().splitlines() if contains is None or contains in ln]

    def wait_for_line(self, contains, timeout=30, count=1):
        deadline = time.monotonic() + timeout
        while True:
            got = self.lines(contains)
            if len(got) >= count:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError("board log has no %r after %ss; tail:\n%s"
                                   % (contains, timeout, "\n".join(self.lines()[-30:])))
            time.sleep(0.05)

    def set_knobs(self, **knobs):
        """Fault knobs for tools/vboard (vboard.json in the flash dir), e.g. wifi="down"."""
        path = os.path.join(self.flash, "vboard.json")
        try:
            with open(path) as f:
                cur = json.load(f)
        except (OSError, ValueError):
            cur = {}
        cur.update(knobs)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            json.dump(cur, f)
        os.replace(tmp, path)   # atomic: the board never reads half a file

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


def add_arguments(p):
    p.add_argument("--url", default=None,
                   help="collector URL, e.g. ws://127.0.0.1:8765/ws (required, except with "
                        "--pty: without it the pty board's flash is left as it is, empty "
                        "when new, a target for `fieldlink deploy`)")
    p.add_argument("--device-id", default="sim-1", help="device id (default sim-1)")
    p.add_argument("--token", default="sim-token", help="device token (default sim-token)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any config key (JSON value or plain string), repeatable; "
                        "e.g. --set sample_interval_s=0.5 --set log_level=debug")
    p.add_argument("--flash", default=None,
                   help="directory standing in for flash (default var/sim/DEVICE_ID)")
    p.add_argument("--board", default="virtual", help="board under boards/ (default virtual)")
    p.add_argument("--heapsize", default=DEFAULT_HEAP,
                   help="MicroPython heap, like an ESP32's free heap (default %s)" % DEFAULT_HEAP)
    p.add_argument("--source", action="store_true",
                   help="install the fieldlink package into the flash as .py source instead "
                        "of mpy-cross output (needs a bigger --heapsize)")
    p.add_argument("--rom", action="store_true",
                   help="run the firmware from a ROMFS image mapped into the board's memory, "
                        "as on a board with the firmware frozen in or in a ROMFS partition: "
                        "the code takes no heap (default: .mpy files in the flash, loaded "
                        "into the heap, as `fieldlink deploy` puts them)")
    p.add_argument("--frozen", action="store_true",
                   help="run the firmware frozen into the binary $MICROPYTHON names (built by "
                        "tools/build_micropython.py --kind frozen from this checkout)")
    p.add_argument("--sleep-scale", type=float, default=None, metavar="F",
                   help="deep sleep lasts F times what the firmware asked (default 1, or "
                        "$FIELDLINK_SIM_SLEEP_SCALE): 0.01 runs a duty cycle 100 times faster")
    p.add_argument("--pty", action="store_true",
                   help="serve the board on a pseudo-terminal (raw REPL) for mpremote/ampy "
                        "instead of running main.py here")


def run(args):
    flash = args.flash or str(paths.VAR / "sim" / args.device_id)
    if args.rom and args.frozen:
        raise SystemExit("fieldlink sim: --rom and --frozen are two placements: pick one")
    if args.frozen and (args.pty or args.source):
        raise SystemExit("fieldlink sim: --frozen runs the firmware frozen into the binary; it "
                         "does not go with --%s" % ("pty" if args.pty else "source"))
    if args.rom and (args.pty or args.source):
        raise SystemExit("fieldlink sim: --rom runs the compiled firmware from ROM; it does not "
                         "go with --%s" % ("pty (a deploy target)" if args.pty else "source"))
    if args.url is None and not args.pty:
        raise SystemExit("fieldlink sim: --url is required (the collector the board streams "
                         "to), except with --pty")
    cfg = make_config(args.url, args.device_id, args.token, parse_set(args.set))
    if args.pty:
        from .vboard_pty import run_pty
        if args.url is None:
            # a fresh board, as flashed with MicroPython: only what is in its flash runs
            return run_pty(flash, board=args.board, heapsize=args.heapsize)
        # the pty board's path has tools/vboard itself (vboard_pty.child_env)
        prepare_flash(flash, cfg, args.board, compiled=not args.source, vboard=False)
        return run_pty(flash, board=args.board, heapsize=args.heapsize,
                       extra_path=(paths.FIRMWARE,))
    upy.find_micropython()
    if args.rom:
        from . import rom
        try:
            rom.check()
        except rom.RomError as e:
            raise SystemExit("fieldlink sim: --rom: %s" % e)
    if args.frozen:
        try:
            upy.check_frozen()
        except upy.MicroPythonMissing as e:
            raise SystemExit("fieldlink sim: --frozen: %s" % e)
    print("fieldlink sim: device %s -> %s, flash %s, heap %s%s" % (
        args.device_id, args.url, flash, args.heapsize, ", firmware in ROM" if args.rom
        else ", firmware frozen in" if args.frozen else ""), flush=True)
    b = SimBoard(flash, cfg, args.board, args.heapsize, echo=True, compiled=not args.source,
                 rom=args.rom, frozen=args.frozen, sleep_scale=args.sleep_scale)
    b.start()
    try:
        rc = b.wait()
    except KeyboardInterrupt:
        b.stop()
        print("fieldlink sim: board stopped (exit status %s)" % (b.exits[-1] if b.exits else "?"),
              flush=True)
        return 130
    return rc or 0
