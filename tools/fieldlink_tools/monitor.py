"""Show a board's serial output, readably: host timestamps, levels in colour, link drops and
reconnects, resets and tracebacks called out. Lines follow firmware/fieldlink/log.py's
`LEVEL tag: message` format; anything else is shown as it came.

Ctrl-C quits. `--until REGEX` quits when a line matches (exit 0), `--timeout S` quits after S
seconds (exit 1 if --until was given and never matched).
"""
import re
import sys
import time

_LOG = re.compile(r"^(DEBUG|INFO|WARN|ERROR) (\w[\w.-]*): (.*)$")
# supervisor: "<where>: <Error>: <text>; retry in <s> s" and "... refused (401): ..."
_RETRY = re.compile(r"^(?P<where>[\w -]+): (?P<err>.*); retry in (?P<s>[\d.]+) s$")
_STREAMING = re.compile(r"^streaming to (\S+)")
_ROM_RESET = re.compile(r"rst:0x([0-9a-f]+) \((\w+)\)")
# ESP32 ROM reset reasons (ESP32 TRM, "Reset and Clock", table of reset sources)
_RESET_WHY = {
    "POWERON_RESET": "power on", "SW_RESET": "software reset", "SW_CPU_RESET":
    "machine.reset()", "TG0WDT_SYS_RESET": "watchdog", "TG1WDT_SYS_RESET": "watchdog",
    "RTCWDT_SYS_RESET": "RTC watchdog", "RTCWDT_BROWN_OUT_RESET": "brown-out (power dip)",
    "DEEPSLEEP_RESET": "wake from deep sleep", "RTCWDT_RTC_RESET": "RTC watchdog",
    "TG0WDT_CPU_RESET": "watchdog", "INTRUSION_RESET": "intrusion",
}
_COLOURS = {"DEBUG": "\x1b[2m", "INFO": "", "WARN": "\x1b[33m", "ERROR": "\x1b[31;1m",
            "LINK": "\x1b[36m", "RESET": "\x1b[35;1m"}
_END = "\x1b[0m"


class Formatter:
    """Feed raw lines, get display lines. Keeps the count of link drops and resets."""

    def __init__(self, colour=False, clock=time.time):
        self.colour = colour
        self.clock = clock
        self.drops = 0
        self.resets = 0
        self.in_traceback = False

    def _stamp(self):
        t = self.clock()
        return time.strftime("%H:%M:%S", time.localtime(t)) + ".%03d" % (int(t * 1000) % 1000)

    def _paint(self, kind, text):
        c = _COLOURS.get(kind, "")
        return c + text + _END if (self.colour and c) else text

    def _line(self, kind, text):
        return "%s %-5s %s" % (self._stamp(), kind, self._paint(kind, text))

    def feed(self, raw):
        """One line of board output (without its line ending) -> display lines."""
        line = raw.rstrip("\r\n")
        if not line.strip():
            return []
        if self.in_traceback:
            if line.startswith(" "):
                return [self._line("", self._paint("ERROR", "  | " + line.strip()))]
            self.in_traceback = False
            return [self._line("ERROR", "  = " + line)]
        if line.startswith("Traceback (most recent call last)"):
            self.in_traceback = True
            return [self._line("ERROR", "exception on the board:")]
        m = _ROM_RESET.search(line)
        if m:
            self.resets += 1
            why = _RESET_WHY.get(m.group(2), m.group(2))
            return [self._line("RESET", "===== board reset #%d: %s (rst:0x%s) ====="
                               % (self.resets, why, m.group(1)))]
        if line.startswith("MPY: soft reboot"):
            self.resets += 1
            return [self._line("RESET", "===== soft reboot #%d =====" % self.resets)]
        m = _LOG.match(line)
        if not m:
            return [self._line("", line)]
        level, tag, msg = m.groups()
        r = _RETRY.match(msg)
        if r:
            where, err, s = r.group("where"), r.group("err"), r.group("s")
            if "refused" in err:
                text = "link refused at %s: %s -> retry in %s s" % (where, err, s)
            else:
                self.drops += 1
                text = "link down #%d at %s (%s) -> reconnect in %s s" % (
                    self.drops, where, err, s)
            return [self._line("LINK", text) if level != "ERROR" else self._line("ERROR", text)]
        s = _STREAMING.match(msg)
        if s:
            text = "link up: %s" % msg
            if self.drops:
                text += " [after %d drop%s]" % (self.drops, "s" if self.drops > 1 else "")
            return [self._line("LINK", text)]
        return [self._line(level, "%s: %s" % (tag, msg))]


def add_arguments(parser):
    parser.add_argument("--port", required=True, help="serial port (or the virtual board's "
                        "/dev/pts/N)")
    parser.add_argument("--baud", type=int, default=115200)
    parser.add_argument("--raw", action="store_true", help="print lines exactly as received")
    parser.add_argument("--colour", "--color", dest="colour", choices=("auto", "always",
                        "never"), default="auto")
    parser.add_argument("--reset", action="store_true", help="reset the board first (RTS "
                        "pulse on the EN line, as esptool does)")
    parser.add_argument("--until", help="exit 0 when a line matches this regex")
    parser.add_argument("--timeout", type=float, help="exit after this many seconds")


def run(args):
    import serial
    from .deploy import DeployError, check_port
    try:
        check_port(args.port)
    except DeployError as e:
        print("fieldlink monitor: error: %s" % e, file=sys.stderr)
        return 2
    colour = args.colour == "always" or (args.colour == "auto" and sys.stdout.isatty())
    fmt = Formatter(colour=colour)
    until = re.compile(args.until) if args.until else None
    deadline = time.monotonic() + args.timeout if args.timeout else None
    try:
        s = serial.Serial()
        s.port, s.baudrate, s.timeout = args.port, args.baud, 0.2
        # DTR/RTS low on open: an ESP32 dev board's auto-reset circuit stays still.
        s.dtr = False
        s.rts = False
        s.open()
    except (serial.SerialException, OSError) as e:
        print("fieldlink monitor: error: cannot open %s: %s" % (args.port, e), file=sys.stderr)
        return 2
    with s:
        if args.reset:
            try:
                s.rts = True
                time.sleep(0.1)
                s.rts = False
            except OSError:
                pass   # a pty has no modem lines
        buf = b""
        while deadline is None or time.monotonic() < deadline:
            try:
                chunk = s.read(4096)
            except serial.SerialException as e:
                print("fieldlink monitor: port closed: %s" % e, file=sys.stderr)
                return 1
            if not chunk:
                continue
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                text = raw.decode("utf-8", "replace").rstrip("\r")
                out = [text] if args.raw else fmt.feed(text)
                for o in out:
                    print(o, flush=True)
                if until and until.search(text):
                    return 0
    return 1 if until else 0
