"""List and validate board files (boards/<name>/board.json).

`fieldlink boards list` shows the known boards; `fieldlink boards validate [NAME|PATH]`
checks one board file (or all) against its chip's pin rules: errors refuse the file,
warnings (strapping pins, console pins) are printed and allowed.
"""
import importlib.util
import json
import re
import sys
from pathlib import Path

from . import paths

# Pin rules per chip, from Espressif's datasheets (ESP32 §2.2 / ESP32-S3 §2.3 / ESP32-C3
# §2.3 and the ESP-IDF GPIO reference). Sets of GPIO numbers.
CHIPS = {
    "esp32": {
        "gpios": set(range(0, 20)) | {21, 22, 23, 25, 26, 27} | set(range(32, 40)),
        "flash": (set(range(6, 12)), "connected to the SPI flash (ESP32 GPIO 6-11)"),
        "input_only": set(range(34, 40)),
        "strapping": {0, 2, 5, 12, 15},
        "console": {1, 3},
        "adc1": set(range(32, 40)),
        "adc2": {0, 2, 4, 12, 13, 14, 15, 25, 26, 27},
        "i2c_ids": (0, 1),
        "chip_temp": True,
        "flash_offset": "0x1000",
        # strapping pins an output may not drive / may drive with care (ESP32 datasheet
        # §2.4 "Strapping Pins"): GPIO 12 (MTDI) sets VDD_SDIO, the flash's supply
        "strap_no_output": {12: "selects the flash voltage at boot (MTDI: high = 1.8 V, which "
                                "a 3.3 V flash does not boot from)"},
        "strap_why": {0: "low at reset enters the serial bootloader",
                      2: "must be low or floating at reset to enter the bootloader",
                      5: "sets the SDIO slave timing at reset; outputs a PWM signal at boot",
                      15: "low at reset silences the boot log; outputs a PWM signal at boot"},
        # LEDC: 80 MHz APB, or the 1 MHz REF_TICK down to 1 Hz (ESP32 TRM, LED PWM)
        "pwm_hz": (1, 40000000),
    },
    "esp32s3": {
        "gpios": set(range(0, 22)) | set(range(26, 49)),
        "flash": (set(range(26, 33)), "connected to the SPI flash/PSRAM (ESP32-S3 GPIO 26-32)"),
        "octal": set(range(33, 38)),
        "input_only": set(),
        "strapping": {0, 3, 45, 46},
        "console": {43, 44, 19, 20},
        "adc1": set(range(1, 11)),
        "adc2": set(range(11, 21)),
        "i2c_ids": (0, 1),
        "chip_temp": True,
        "flash_offset": "0x0",
        # ESP32-S3 datasheet §2.3 "Strapping Pins": GPIO 45 sets VDD_SPI (flash supply)
        "strap_no_output": {45: "selects the flash voltage at boot (VDD_SPI: high = 1.8 V)"},
        "strap_why": {0: "low at reset enters the serial bootloader",
                      3: "selects the JTAG source at reset",
                      46: "must be low at reset to enter the bootloader; high silences the "
                          "boot log"},
        # LEDC: 80 MHz APB, a 10-bit integer divider and at most 14 bits of duty resolution
        "pwm_hz": (5, 40000000),
    },
    "esp32c3": {
        "gpios": set(range(0, 22)),
        "flash": (set(range(12, 18)), "connected to the SPI flash (ESP32-C3 GPIO 12-17)"),
        "vdd_spi": {11},
        "input_only": set(),
        "strapping": {2, 8, 9},
        "console": {18, 19, 20, 21},
        "adc1": set(range(0, 5)),
        "adc2": {5},
        "i2c_ids": (0,),
        "chip_temp": True,
        "flash_offset": "0x0",
        # ESP32-C3 datasheet §2.4 "Strapping Pins"
        "strap_no_output": {},
        "strap_why": {2: "must be high at reset for a normal or download boot",
                      8: "must be high at reset to enter the bootloader",
                      9: "low at reset enters the serial bootloader (the BOOT button)"},
        "pwm_hz": (5, 40000000),  # LEDC as on the S3
    },
    "unix": None,  # the virtual board: any pin number, no rules
}


def _firmware_drivers():
    # The firmware's board.py (plain Python, json its only import) holds the one driver
    # table; loaded from its file, so the tools need no firmware on sys.path.
    spec = importlib.util.spec_from_file_location(
        "fieldlink_firmware_board", paths.FIRMWARE / "fieldlink" / "board.py")
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m.DRIVERS


# driver -> what it is attached to: "i2c", "onewire", "pin", "adc" or None
DRIVERS = {name: d[2] for name, d in _firmware_drivers().items()}
ADDRESSES = {"bme280": (0x76, 0x77), "bmp280": (0x76, 0x77), "sht3x": (0x44, 0x45),
             "sht4x": (0x44, 0x45, 0x46)}
ATTENS = (0, 2.5, 6, 11)


class Problem:
    """One finding: level is "error" (the board file is refused) or "warning"."""

    def __init__(self, level, where, message):
        self.level = level
        self.where = where
        self.message = message

    def __str__(self):
        return "%s: %s: %s" % (self.level, self.where, self.message)

    __repr__ = __str__


class BoardError(ValueError):
    pass


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def validate(board):
    """All problems with a board dict, errors first. An empty list means a clean file."""
    out = []

    def err(where, msg):
        out.append(Problem("error", where, msg))

    def warn(where, msg):
        out.append(Problem("warning", where, msg))

    if not isinstance(board, dict):
        return [Problem("error", "board", "expected a JSON object")]
    for key in ("name", "title", "chip"):
        if not isinstance(board.get(key), str) or not board.get(key):
            err(key, "required: a non-empty string")
    chip = board.get("chip")
    rules = CHIPS.get(chip) if isinstance(chip, str) else None
    if isinstance(chip, str) and chip not in CHIPS:
        err("chip", "unknown chip %r (known: %s)" % (chip, ", ".join(sorted(CHIPS))))
        chip = None
    mp = board.get("micropython")
    if not isinstance(mp, dict):
        err("micropython", "required: {version, image, flash_offset, url}")
    else:
        if not re.fullmatch(r"\d+\.\d+\.\d+", str(mp.get("version", ""))):
            err("micropython.version", "expected a version like 1.29.0, got %r"
                % mp.get("version"))
        if rules is not None:
            if not isinstance(mp.get("image"), str) or not mp["image"].endswith(".bin"):
                err("micropython.image", "expected the image file name (*.bin), got %r"
                    % mp.get("image"))
            if mp.get("flash_offset") != rules["flash_offset"]:
                err("micropython.flash_offset", "%s images are written at %s, got %r"
                    % (chip, rules["flash_offset"], mp.get("flash_offset")))
        if not isinstance(mp.get("url"), str):
            err("micropython.url", "expected where to download the image")

    used = {}  # pin -> where, to catch one pin given two jobs

    def pin(where, p, output=True, adc=False, shared_ok=None, strap=True):
        if not _is_int(p) or p < 0:
            err(where, "expected a GPIO number, got %r" % (p,))
            return
        prev = used.get(p)
        if prev is not None and prev != shared_ok:
            err(where, "GPIO %d is already used by %s" % (p, prev))
        used.setdefault(p, shared_ok or where)
        if rules is None:
            return
        if p not in rules["gpios"]:
            err(where, "GPIO %d does not exist on the %s" % (p, chip))
            return
        flash, why = rules["flash"]
        if p in flash:
            err(where, "GPIO %d is %s; using it stops the chip" % (p, why))
        if p in rules.get("octal", ()):
            if board.get("psram") == "octal":
                err(where, "GPIO %d is used by the octal PSRAM/flash on this module" % p)
            else:
                warn(where, "GPIO %d is used by octal PSRAM/flash on some ESP32-S3 modules" % p)
        if p in rules.get("vdd_spi", ()):
            warn(where, "GPIO %d is VDD_SPI (flash power) unless an eFuse frees it" % p)
        if output and p in rules["input_only"]:
            err(where, "GPIO %d is input-only (ESP32 GPIO 34-39: no output, no pull-ups)" % p)
        if strap and p in rules["strapping"]:
            warn(where, "GPIO %d is a strapping pin (%s: %s): what is wired to it must not "
                 "change the level at reset" % (p, chip, ", ".join(
                     str(x) for x in sorted(rules["strapping"]))))
        if p in rules["console"]:
            warn(where, "GPIO %d carries the USB/UART console on most boards" % p)
        if adc:
            if p in rules["adc2"]:
                err(where, "GPIO %d is on ADC2, which cannot be read while Wi-Fi is on; "
                    "use an ADC1 pin (%s)" % (p, ", ".join(str(x) for x in sorted(rules["adc1"]))))
            elif p not in rules["adc1"]:
                err(where, "GPIO %d has no ADC channel" % p)

    led = board.get("led")
    if led is not None:
        if not isinstance(led, dict):
            err("led", "expected an object {pin, active_low} or null")
        else:
            pin("led.pin", led.get("pin"))

    buses = board.get("buses")
    if not isinstance(buses, dict):
        err("buses", "required: an object of named buses")
        buses = {}
    for name, bus in buses.items():
        w = "buses." + name
        if not isinstance(bus, dict):
            err(w, "expected an object")
            continue
        t = bus.get("type")
        if t == "i2c":
            ids = rules["i2c_ids"] if rules else (0, 1)
            if not bus.get("soft") and bus.get("id", 0) not in ids:
                err(w + ".id", "the %s has I2C ids %s, got %r" % (chip, ids, bus.get("id")))
            f = bus.get("freq", 100000)
            if not _is_int(f) or not 1000 <= f <= 1000000:
                err(w + ".freq", "expected 1000..1000000 Hz, got %r" % (f,))
            pin(w + ".scl", bus.get("scl"))
            pin(w + ".sda", bus.get("sda"))
        elif t == "onewire":
            pin(w + ".pin", bus.get("pin"))
        else:
            err(w + ".type", "expected i2c or onewire, got %r" % (t,))

    sensors = board.get("sensors")
    if not isinstance(sensors, list):
        err("sensors", "required: a list")
        sensors = []
    names, addrs = set(), {}
    for w, s in _objects(sensors, "sensors", err):
        name = s.get("name")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,31}", name):
            err(w + ".name", "expected a name of 1-32 letters, digits and _, got %r" % (name,))
        elif name in names:
            err(w + ".name", "%r is used twice" % name)
        names.add(name)
        drv = s.get("driver")
        if drv not in DRIVERS:
            err(w + ".driver", "unknown driver %r (known: %s)"
                % (drv, ", ".join(sorted(DRIVERS))))
            continue
        kind = DRIVERS[drv]
        if kind in ("i2c", "onewire"):
            b = s.get("bus")
            if b not in buses or buses[b].get("type") != kind:
                err(w + ".bus", "%s needs a %s bus from buses, got %r" % (drv, kind, b))
                continue
            if kind == "i2c":
                a = s.get("address")
                if not _is_int(a) or a not in ADDRESSES[drv]:
                    err(w + ".address", "a %s answers at %s, got %r" % (drv, " or ".join(
                        "%d (0x%02x)" % (x, x) for x in ADDRESSES[drv]), a))
                elif (b, a) in addrs:
                    err(w + ".address", "0x%02x on %s is already %s" % (a, b, addrs[(b, a)]))
                else:
                    addrs[(b, a)] = name
            elif "rom" in s:
                rom = s["rom"]
                if not (isinstance(rom, str) and re.fullmatch(r"[0-9a-fA-F]{16}", rom)
                        and _dallas_ok(bytes.fromhex(rom))):
                    err(w + ".rom", "expected 16 hex digits with a valid CRC, got %r" % (rom,))
        elif kind == "pin":
            pin(w + ".pin", s.get("pin"))
        elif kind == "adc":
            pin(w + ".pin", s.get("pin"), output=False, adc=True)
            if s.get("atten", 11) not in ATTENS:
                err(w + ".atten", "expected one of %s (dB), got %r" % (ATTENS, s.get("atten")))
            # readings are "<name>.<quantity>" (the collector takes 64 chars) in a unit (16)
            q, u = s.get("quantity", "voltage"), s.get("unit", "V")
            if not isinstance(q, str) or not re.fullmatch(r"[A-Za-z0-9_]{1,31}", q):
                err(w + ".quantity", "expected 1-31 letters, digits or _, got %r" % (q,))
            if not isinstance(u, str) or not 0 < len(u) <= 16:
                err(w + ".unit", "expected a unit of 1-16 chars, got %r" % (u,))
        elif drv == "chip_temp" and rules is not None and not rules["chip_temp"]:
            err(w + ".driver", "the %s has no temperature sensor" % chip)
    # Skip ROM addresses every device on a 1-Wire bus: with two or more, their answers
    # collide, so each needs its ROM code.
    ow = {}
    for i, s in enumerate(sensors):
        if isinstance(s, dict) and s.get("driver") == "ds18b20":
            ow.setdefault(s.get("bus"), []).append((i, s))
    for b, entries in ow.items():
        if len(entries) > 1:
            for i, s in entries:
                if "rom" not in s:
                    err("sensors[%d].rom" % i, "required: %d DS18B20s share %s, so each needs "
                        "its ROM code (OneWire.scan() on the board lists them)" % (len(entries), b))
    _outputs(board, rules, chip, pin, err, warn)
    out.sort(key=lambda p: p.level != "error")
    return out


OUTPUT_TYPES = ("digital", "pwm", "servo")
OUTPUT_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
# Above this the LEDC has 8 bits of duty resolution or fewer (80 MHz / 2**8)
PWM_FINE_HZ = 312500


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _outputs(board, rules, chip, pin, err, warn):
    """The "outputs" list (docs/outputs.md): names, types, values, and which pins can drive
    them on this chip."""
    outs = board.get("outputs")
    if outs is None:
        return
    if board.get("restore", "safe") not in ("safe", "last"):
        err("restore", "expected safe or last, got %r" % (board.get("restore"),))
    if not isinstance(outs, list):
        err("outputs", "expected a list of outputs")
        return
    names = set()
    for w, o in _objects(outs, "outputs", err):
        name = o.get("name")
        if not isinstance(name, str) or not OUTPUT_NAME.fullmatch(name):
            err(w + ".name", "expected 1-32 of A-Z a-z 0-9 _ . -, got %r" % (name,))
        elif name in names:
            err(w + ".name", "%r is used twice" % name)
        names.add(name)
        t = o.get("type")
        if t not in OUTPUT_TYPES:
            err(w + ".type", "expected digital, pwm or servo, got %r" % (t,))
            continue
        p = o.get("pin")
        pin(w + ".pin", p, strap=False)  # (an output's strapping rules are below)
        if rules is not None and _is_int(p):
            if p in rules["strap_no_output"]:
                err(w + ".pin", "GPIO %d cannot drive an output: it is a strapping pin that %s"
                    % (p, rules["strap_no_output"][p]))
            elif p in rules["strap_why"]:
                warn(w + ".pin", "GPIO %d is a strapping pin: %s; the load must not pull it "
                     "at reset" % (p, rules["strap_why"][p]))
        if not isinstance(o.get("active_low", False), bool):
            err(w + ".active_low", "expected true or false")
        if o.get("restore", "safe") not in ("safe", "last"):
            err(w + ".restore", "expected safe or last, got %r" % (o.get("restore"),))
        safe = o.get("safe")
        rng = o.get("range_deg", 180)
        if t == "digital":
            if safe not in (0, 1) or isinstance(safe, bool):
                err(w + ".safe", "a digital output's safe value is 0 or 1, got %r" % (safe,))
            continue
        f = o.get("freq", 50 if t == "servo" else 1000)
        lo, hi = rules["pwm_hz"] if rules else (1, 40000000)
        if not _is_int(f) or not lo <= f <= hi:
            err(w + ".freq", "the %s's PWM (LEDC) runs at %d..%d Hz, got %r"
                % (chip, lo, hi, f))
        elif f > PWM_FINE_HZ:
            warn(w + ".freq", "at %d Hz the PWM has 8 bits of duty resolution or fewer" % f)
        if t == "pwm":
            if not _num(safe) or not 0 <= safe <= 1:
                err(w + ".safe", "a PWM output's safe value is a duty 0.0-1.0, got %r"
                    % (safe,))
            continue
        lo_us, hi_us = o.get("min_us", 500), o.get("max_us", 2500)
        if not (_num(lo_us) and _num(hi_us) and 0 < lo_us < hi_us):
            err(w + ".min_us", "expected 0 < min_us < max_us, got %r, %r" % (lo_us, hi_us))
        elif _is_int(f) and f > 0 and hi_us >= 1000000 / f:
            err(w + ".max_us", "a %d us pulse does not fit a %d Hz period" % (hi_us, f))
        if not _num(rng) or rng <= 0:
            err(w + ".range_deg", "expected degrees > 0, got %r" % (rng,))
        elif not _num(safe) or not 0 <= safe <= rng:
            err(w + ".safe", "a servo's safe value is an angle 0-%s, got %r" % (rng, safe))


def _objects(items, key, err):
    """(where, entry) for each entry of the list `items` that is an object; the others are
    errors."""
    for i, o in enumerate(items):
        w = "%s[%d]" % (key, i)
        if isinstance(o, dict):
            yield w, o
        else:
            err(w, "expected an object")


def _dallas_ok(rom):
    crc = 0
    for b in rom:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return crc == 0


def list_boards():
    """Names of the board folders under boards/ that hold a board.json."""
    return sorted(p.parent.name for p in paths.BOARDS.glob("*/board.json"))


def board_path(name_or_path):
    """boards/NAME/board.json, or a path to a board.json (or to a folder holding one)."""
    p = Path(str(name_or_path))
    if p.is_dir():
        p = p / "board.json"
    if p.is_file():
        return p
    if "/" not in str(name_or_path) and not str(name_or_path).endswith(".json"):
        q = paths.BOARDS / str(name_or_path) / "board.json"
        if q.is_file():
            return q
    raise BoardError("unknown board %r (known: %s; or give a path to a board.json)"
                     % (str(name_or_path), ", ".join(list_boards())))


def read_board_file(p):
    """The parsed JSON of a board file. BoardError naming the file, and for a JSON error its
    line and column, if it cannot be read or is not JSON."""
    try:
        text = Path(p).read_text(encoding="utf-8")
    except OSError as e:
        raise BoardError("%s: cannot read it (%s)" % (p, e.strerror or e))
    except UnicodeDecodeError as e:
        raise BoardError("%s: not valid JSON: not UTF-8 text (byte %d)" % (p, e.start))
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise BoardError("%s: not valid JSON: line %d, column %d: %s"
                         % (p, e.lineno, e.colno, e.msg))


def load_board(name_or_path, strict=True):
    """Load and validate a board; return its dict. Raises BoardError for an unknown board,
    bad JSON or (strict) any validation error, naming the key and the rule."""
    p = board_path(name_or_path)
    data = read_board_file(p)
    problems = validate(data)
    errors = [str(x) for x in problems if x.level == "error"]
    if strict and errors:
        raise BoardError("%s is not a valid board file:\n  %s" % (p, "\n  ".join(errors)))
    return data


def add_arguments(parser):
    sub = parser.add_subparsers(dest="boards_cmd", metavar="ACTION")
    sub.add_parser("list", help="the boards under boards/")
    v = sub.add_parser("validate", help="check board files against their chip's pin rules")
    v.add_argument("board", nargs="?", help="a board name or a path (default: every board)")


def run(args):
    if args.boards_cmd == "list":
        for name in list_boards():
            try:
                d = read_board_file(paths.BOARDS / name / "board.json")
            except BoardError as e:
                print("fieldlink boards list: %s" % e, file=sys.stderr)
                continue
            if not isinstance(d, dict):
                d = {}
            print("%-20s %-8s %s" % (name, d.get("chip", "?"), d.get("title", "")))
        return 0
    if args.boards_cmd == "validate":
        targets = [args.board] if args.board else list_boards()
        bad = 0
        for t in targets:
            try:
                p = board_path(t)
                problems = validate(read_board_file(p))
            except BoardError as e:  # the message names the board or the file
                print("fieldlink boards validate: %s" % e, file=sys.stderr)
                bad += 1
                continue
            errors = [x for x in problems if x.level == "error"]
            print("%s: %s" % (p, "refused" if errors else "ok"))
            for x in problems:
                print("  " + str(x))
            bad += bool(errors)
        return 1 if bad else 0
    print("usage: fieldlink boards {list,validate} [NAME|PATH]", file=sys.stderr)
    return 2
