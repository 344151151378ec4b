"""The virtual board's pins and buses for tools/vboard/machine.py, loaded on first use of
machine.Pin/Signal/I2C/SoftI2C/ADC: I2C transfers go to the register-level simdev models on
the bus, ADC reads a simulated voltage. Errors match the ESP32 port."""
import simdev


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
