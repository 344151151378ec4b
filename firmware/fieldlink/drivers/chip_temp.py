"""The chip's own temperature sensor, where the variant has one: S2/S3/C3/C6 have
esp32.mcu_temperature() in C; the original ESP32's raw_temperature() is in Fahrenheit and
uncalibrated (offset it in config if you use it)."""
from fieldlink.drivers import DeviceMissing


def fahrenheit_to_celsius(f):
    return (f - 32) / 1.8


class ChipTemp:
    channels = (("temperature", "C"),)

    def __init__(self, name="chip", esp32mod=None):
        self.name = name
        if esp32mod is None:
            try:
                import esp32 as esp32mod
            except ImportError:
                esp32mod = None
        self._mod = esp32mod

    def start(self):
        return 0

    def read(self):
        m = self._mod
        if m is not None:
            f = getattr(m, "mcu_temperature", None)
            if f is not None:
                return (float(f()),)
            f = getattr(m, "raw_temperature", None)
            if f is not None:
                return (fahrenheit_to_celsius(f()),)
        raise DeviceMissing("chip temperature: this chip has no sensor")
