"""The rarely used rest of the virtual board's `machine` (tools/vboard/machine.py loads it on
first use): reset-cause and wake constants, soft resets and sleep modes, RTC, unique_id,
freq, irq stubs; PWM (from simdev/machine_io.py, whose pins record their levels and duties
in vboard_pins.json; reached through here so that machine.py, resident on every virtual
board, does not grow for it)."""
import os
import time

from machine import _exit

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

_freq = [160000000]


def soft_reset():
    _exit("soft reset")


def bootloader(*a):
    _exit("bootloader")


def deepsleep(ms=0):
    """The process ends and the sim host starts it again after `ms` (scaled; exit status
    77, fieldlink_tools.sim.EXIT_DEEPSLEEP): RTC memory is on disk already (RTC.memory)."""
    import sys
    try:
        sys.stdout.flush()
    except Exception:
        pass
    print("vboard: deepsleep %d ms" % int(ms))
    sys.exit(77)


def lightsleep(ms=0):
    if ms:
        time.sleep_ms(ms)


def idle():
    time.sleep_ms(1)


def wake_reason():
    # the sim host says why it started this process again (TIMER_WAKE after deepsleep)
    v = os.getenv("FIELDLINK_VBOARD_WAKE_REASON")
    try:
        return int(v) if v else 0
    except ValueError:
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


_RTC_FILE = ".vboard-rtc"   # in the flash directory: the sim host removes it at power-on


class RTC:
    """RTC memory survives deep sleep and resets, not a power cut: kept in _RTC_FILE, which
    fieldlink_tools.sim removes when it powers the board on."""
    _offset = [0]

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
            try:
                with open(_RTC_FILE, "rb") as f:
                    return f.read()   # (at most 2048: memory(data) checks)
            except OSError:
                return b""
        if len(data) > 2048:  # an ESP32's RTC user memory holds 2 KB
            raise ValueError("RTC memory: at most 2048 bytes")
        with open(_RTC_FILE, "wb") as f:
            f.write(bytes(data))



def __getattr__(name):
    if name == "PWM":
        from simdev.machine_io import PWM
        return PWM
    raise AttributeError(name)
