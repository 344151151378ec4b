"""The virtual board's ADC for tools/vboard/machine.py, loaded on first use of machine.ADC:
reads the simulated voltage of the analog sensor the board file puts on the pin."""
import simdev
from simdev.machine_io import _pin_no


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
