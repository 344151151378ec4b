"""Stand-in for the ESP32's `machine` module on the virtual board (MicroPython unix port):
Pin/Signal, I2C and SoftI2C with the register-level devices of simdev, ADC, WDT, RTC, resets.
Conventions shared with the sim host: reset()/soft_reset()/deepsleep() flush stdout and exit
with status 75 (the host restarts the interpreter like a reboot); reset_cause() reads
$FIELDLINK_VBOARD_RESET_CAUSE (a name like WDT_RESET or a number; default PWRON_RESET).

The pin and bus classes (Pin, Signal, I2C, SoftI2C, ADC) and the simdev device models behind
them live in simdev/machine_io.py and are loaded on first use (module __getattr__, PEP 562;
MicroPython has it with MICROPY_MODULE_GETATTR, as the unix and ESP32 ports do): on a real
ESP32 they are in silicon, and a board with only the simulated sensor never pays their heap."""
import os
import sys
import time

_IO = ("Pin", "Signal", "I2C", "SoftI2C", "ADC")

# ESP32 port values
PWRON_RESET = 1
HARD_RESET = 2
WDT_RESET = 3
DEEPSLEEP_RESET = 4
SOFT_RESET = 5
PIN_WAKE = EXT0_WAKE = 2
EXT1_WAKE = 3
TIMER_WAKE = 4
TOUCHPAD_WAKE = 5
ULP_WAKE = 6
SLEEP = 2
DEEPSLEEP = 4

EXIT_RESET = 75
EXIT_WDT = 76
_freq = [160000000]


def _exit(status, why):
    try:
        sys.stdout.flush()
    except Exception:
        pass
    print("vboard: %s" % why)
    sys.exit(status)


def reset():
    _exit(EXIT_RESET, "reset")


def soft_reset():
    _exit(EXIT_RESET, "soft reset")


def bootloader(*a):
    _exit(EXIT_RESET, "bootloader")


def deepsleep(ms=0):
    _exit(EXIT_RESET, "deepsleep %d ms" % ms)


def lightsleep(ms=0):
    if ms:
        time.sleep_ms(ms)


def idle():
    time.sleep_ms(1)


def reset_cause():
    v = os.getenv("FIELDLINK_VBOARD_RESET_CAUSE")
    if not v:
        return PWRON_RESET
    try:
        return int(v)
    except ValueError:
        return globals().get(v, PWRON_RESET)


def wake_reason():
    return 0


def freq(hz=None):
    if hz is None:
        return _freq[0]
    _freq[0] = hz


def unique_id():
    """6 bytes like an ESP32's MAC: the knob unique_id (hex), else derived from the flash
    directory so two virtual boards differ and one board keeps its id across reboots."""
    import simdev
    k = simdev.knobs().get("unique_id")
    if k:
        import binascii
        return binascii.unhexlify(k)
    h = 5381
    for c in os.getcwd():
        h = (h * 33 + ord(c)) & 0xFFFFFF
    return bytes((0x24, 0x0A, 0xC4, h >> 16, (h >> 8) & 0xFF, h & 0xFF))


def disable_irq():
    return 0


def enable_irq(state=0):
    pass


def time_pulse_us(pin, level, timeout_us=1000000):
    return -1


class WDT:
    """Hardware watchdog. A background thread (_thread; the unix port's threads are
    GIL-less) checks the last feed; on expiry it prints 'vboard: WDT timeout' and kills the
    process with SIGTERM: the unix port cannot make another thread exit with a status (a
    thread's sys.exit ends only that thread, and exceptions raised in micropython.schedule
    callbacks are printed and dropped), so the host sees -15, never 76."""

    def __init__(self, id=0, timeout=5000):
        import _thread
        self.timeout = timeout
        self._last = time.ticks_ms()
        _thread.start_new_thread(self._watch, ())

    def feed(self):
        self._last = time.ticks_ms()

    def _watch(self):
        while True:
            time.sleep_ms(min(100, self.timeout))
            if time.ticks_diff(time.ticks_ms(), self._last) > self.timeout:
                print("vboard: WDT timeout (%d ms without feed), resetting" % self.timeout)
                os.system("kill -TERM $PPID")
                return


class RTC:
    _offset = [0]
    _mem = [b""]

    def __init__(self, id=0):
        pass

    def datetime(self, dt=None):
        if dt is None:
            t = time.gmtime(time.time() + self._offset[0])
            return (t[0], t[1], t[2], t[6], t[3], t[4], t[5], 0)
        secs = time.mktime((dt[0], dt[1], dt[2], dt[4], dt[5], dt[6], 0, 0))
        self._offset[0] = secs - time.time()

    def init(self, dt):
        self.datetime(dt)

    def memory(self, data=None):
        if data is None:
            return self._mem[0]
        self._mem[0] = bytes(data)


def __getattr__(name):
    if name in _IO:
        import simdev.machine_io as io
        v = getattr(io, name)
        globals()[name] = v   # later lookups find it without this call
        return v
    raise AttributeError(name)
