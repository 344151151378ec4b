"""Sensor drivers: each takes its bus and address, does no I/O until first read, and raises
a SensorError subclass (never invents a value) when the device is missing or answers badly."""


class SensorError(Exception):
    """A reading could not be taken; the message says why. The sampler marks it missing."""


class DeviceMissing(SensorError):
    """Nothing answered at the configured address/pin (or the bus is stuck)."""


class CRCError(SensorError):
    """The device answered, but its checksum did not match: the data is not trusted."""


class SuspectReading(SensorError):
    """The value is one a device reports when it did not really measure (e.g. DS18B20 85 C)."""


def bus_error(exc, what):
    """Turn a bus OSError into a DeviceMissing whose message says what did not answer:
    ESP32 MicroPython raises ENODEV (19) for a NACKed address, ETIMEDOUT (110/116) when a
    line is held low (a stuck bus), EIO (5) for other failed transfers."""
    code = exc.args[0] if exc.args else 0
    if code in (110, 116):
        return DeviceMissing("%s: bus stuck (timeout, errno %d)" % (what, code))
    return DeviceMissing("%s: no answer (errno %s)" % (what, code))


def sleep_ms(ms):
    """Block for ms milliseconds: for callers that read() without start() and waiting."""
    import time
    if hasattr(time, "sleep_ms"):
        time.sleep_ms(ms)
    else:  # CPython
        time.sleep(ms / 1000)
