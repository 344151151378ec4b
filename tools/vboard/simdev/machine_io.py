"""The virtual board's pins for tools/vboard/machine.py, loaded on first use of machine.Pin,
Signal or PWM. The buses are in i2c.py (I2C, SoftI2C) and adc.py (ADC), loaded only when a board
uses them.

What the firmware drives is visible from outside: every output pin's level and every PWM
channel's frequency and duty are kept in OUT and written, on each change, to PINS_FILE in the
board's flash (the current directory), e.g.
  {"26": {"v": 1}, "27": {"freq": 1000, "duty_u16": 32768}, "_thermal": {"c": 23.9}}
(replaced whole by a rename, so a reader never sees half a file). The thermal model in
simdev/__init__.py reads OUT."""
import os

PINS_FILE = "vboard_pins.json"
OUT = {}  # pin number -> {"v": level} or {"freq": Hz, "duty_u16": 0-65535}
EXTRA = {}  # other state the file carries ("_thermal")


def publish():
    import json
    d = {}
    for k in OUT:
        d[str(k)] = OUT[k]
    d.update(EXTRA)
    tmp = PINS_FILE + ".tmp"
    with open(tmp, "w") as f:
        json.dump(d, f)
    os.rename(tmp, PINS_FILE)


def _out(pin, state):
    if OUT.get(pin) != state:
        OUT[pin] = state
        publish()


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
        self._show()

    def _show(self):
        if getattr(self, "mode", None) == Pin.OUT:
            _out(self.id, {"v": self._v})

    def value(self, v=None):
        if v is None:
            return self._v
        self._v = 1 if v else 0
        self._show()

    __call__ = value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

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


class PWM:
    """machine.PWM: frequency and duty (duty_u16, or duty_ns at the frequency) recorded."""

    def __init__(self, dest, freq=None, duty_u16=None, duty_ns=None, **kw):
        self.pin = _pin_no(dest)
        self._f = 5000
        self._d = 0
        self.init(freq, duty_u16, duty_ns)

    def init(self, freq=None, duty_u16=None, duty_ns=None, **kw):
        if freq is not None:
            self._f = int(freq)
        if duty_u16 is not None:
            self._d = max(0, min(65535, int(duty_u16)))
        if duty_ns is not None:
            self._d = max(0, min(65535, int(duty_ns * self._f * 65535 // 1000000000)))
        self._show()

    def _show(self):
        _out(self.pin, {"freq": self._f, "duty_u16": self._d})

    def freq(self, f=None):
        if f is None:
            return self._f
        self.init(freq=f)

    def duty_u16(self, d=None):
        if d is None:
            return self._d
        self.init(duty_u16=d)

    def duty_ns(self, ns=None):
        if ns is None:
            return self._d * 1000000000 // (self._f * 65535)
        self.init(duty_ns=ns)

    def deinit(self):
        OUT.pop(self.pin, None)
        publish()
