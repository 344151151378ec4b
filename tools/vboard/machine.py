"""Stand-in for the ESP32's `machine` module on the virtual board (MicroPython unix port):
Pin/Signal, I2C and SoftI2C with the register-level devices of simdev, ADC, WDT, RTC, resets.
Conventions shared with the sim host: reset()/soft_reset()/deepsleep() flush stdout and exit
with status 75 (the host restarts the interpreter like a reboot); reset_cause() reads
$FIELDLINK_VBOARD_RESET_CAUSE (a name like WDT_RESET or a number; default PWRON_RESET)."""
import os
import sys
import time

import simdev

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


class Pin:
    IN = 1
    OUT = 3
    OPEN_DRAIN = 7
    PULL_UP = 1
    PULL_DOWN = 2
    PULL_HOLD = 4
    IRQ_RISING = 1
    IRQ_FALLING = 2
    WAKE_LOW = 4
    WAKE_HIGH = 5
    DRIVE_0, DRIVE_1, DRIVE_2, DRIVE_3 = 0, 1, 2, 3

    def __init__(self, id, mode=-1, pull=-1, value=None, **kw):
        self.id = id
        self._v = 0
        self.init(mode, pull, value)

    def init(self, mode=-1, pull=-1, value=None, **kw):
        if mode != -1:
            self.mode = mode
        if value is not None:
            self._v = 1 if value else 0

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0

    __call__ = value

    def on(self):
        self._v = 1

    def off(self):
        self._v = 0

    def irq(self, handler=None, trigger=3, **kw):
        return None

    def __repr__(self):
        return "Pin(%d)" % self.id


class Signal:
    def __init__(self, pin, invert=False, **kw):
        self.pin = pin if isinstance(pin, Pin) else Pin(pin, **kw)
        self.invert = bool(invert)

    def value(self, v=None):
        if v is None:
            return self.pin.value() ^ self.invert
        self.pin.value((1 if v else 0) ^ self.invert)

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)


def _pin_no(p):
    return p.id if isinstance(p, Pin) else p


class _I2CBase:
    """I2C controller: routes transfers to the simdev models on this bus. Errors match the
    ESP32 port: ENODEV (19) for a NACKed address, ETIMEDOUT (116) when the bus is stuck."""

    def _attach(self, bus_name):
        from simdev.bme280 import BME280
        from simdev.sht3x import SHT3x, SHT4x
        self.bus = bus_name
        self.devices = {}
        models = {"bme280": lambda n, s: BME280(n, s),
                  "bmp280": lambda n, s: BME280(n, s, humidity=False),
                  "sht3x": SHT3x, "sht4x": SHT4x}
        for s in simdev.sensors_on(bus_name) if bus_name else ():
            m = models.get(s.get("driver"))
            if m is not None and "address" in s:
                self.devices[s["address"]] = m(s["name"], s)

    def _dev(self, addr):
        if self.bus is not None and simdev.bus_stuck(self.bus):
            raise OSError(116)
        d = self.devices.get(addr)
        if d is None:
            raise OSError(19)
        f = simdev.fault(d.name)
        if f == "stuck":
            raise OSError(116)
        if f == "absent":
            raise OSError(19)
        return d

    def init(self, *a, **kw):
        pass

    def deinit(self):
        pass

    def scan(self):
        out = []
        for a in sorted(self.devices):
            try:
                self._dev(a)
                out.append(a)
            except OSError:
                pass
        return out

    def writeto(self, addr, buf, stop=True):
        self._dev(addr).write(bytes(buf))
        return len(buf)

    def writevto(self, addr, vector, stop=True):
        data = b"".join(bytes(v) for v in vector)
        self._dev(addr).write(data)
        return len(data)

    def readfrom_into(self, addr, buf, stop=True):
        data = self._dev(addr).read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom(self, addr, nbytes, stop=True):
        return bytes(self._dev(addr).read(nbytes))

    def writeto_mem(self, addr, memaddr, buf, addrsize=8):
        self._dev(addr).write(bytes((memaddr,)) + bytes(buf))

    def readfrom_mem_into(self, addr, memaddr, buf, addrsize=8):
        d = self._dev(addr)
        d.write(bytes((memaddr,)))
        data = d.read(len(buf))
        for i in range(len(buf)):
            buf[i] = data[i]

    def readfrom_mem(self, addr, memaddr, nbytes, addrsize=8):
        buf = bytearray(nbytes)
        self.readfrom_mem_into(addr, memaddr, buf)
        return bytes(buf)


class I2C(_I2CBase):
    def __init__(self, id=0, scl=None, sda=None, freq=400000, timeout=50000):
        self.id = id
        name, _ = simdev.find_bus("i2c", id=id)
        self._attach(name)


class SoftI2C(_I2CBase):
    def __init__(self, scl, sda, freq=400000, timeout=50000):
        name, _ = simdev.find_bus("i2c", scl=_pin_no(scl), sda=_pin_no(sda))
        self._attach(name)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3
    WIDTH_9BIT = 9
    WIDTH_10BIT = 10
    WIDTH_11BIT = 11
    WIDTH_12BIT = 12
    _FULL_SCALE_V = (0.95, 1.25, 1.75, 3.1)  # usable range per attenuation (ESP32 ADC docs)

    def __init__(self, pin, atten=3, **kw):
        self.pin = _pin_no(pin)
        self._atten = atten
        self._width = 12
        s = simdev.sensor_on_pin(self.pin, ("analog",))
        self._name = s["name"] if s else "adc%d" % self.pin

    def atten(self, a):
        self._atten = a

    def width(self, w):
        self._width = w

    def init(self, atten=None, **kw):
        if atten is not None:
            self._atten = atten

    def _volts(self):
        v = simdev.value(self._name, "voltage")
        return max(0.0, min(v, self._FULL_SCALE_V[self._atten]))

    def read_uv(self):
        return int(self._volts() * 1000000)

    def read_u16(self):
        return int(self._volts() / self._FULL_SCALE_V[self._atten] * 65535)

    def read(self):
        return self.read_u16() >> (16 - self._width)


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
