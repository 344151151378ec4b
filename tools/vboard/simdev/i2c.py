"""The virtual board's I2C controllers for tools/vboard/machine.py, loaded on first use of
machine.I2C or SoftI2C: transfers go to the register-level simdev models on the bus (each
model's module is loaded only if the board file puts such a device on a bus). Errors match
the ESP32 port."""
import simdev
from simdev.machine_io import _pin_no


class _I2CBase:
    """I2C controller: routes transfers to the simdev models on this bus. Errors match the
    ESP32 port: ENODEV (19) for a NACKed address, ETIMEDOUT (116) when the bus is stuck."""

    def _attach(self, bus_name):
        self.bus = bus_name
        self.devices = {}
        for s in simdev.sensors_on(bus_name) if bus_name else ():
            d = s.get("driver")
            if "address" not in s:
                continue
            if d in ("bme280", "bmp280"):
                from simdev.bme280 import BME280
                self.devices[s["address"]] = BME280(s["name"], s, humidity=d == "bme280")
            elif d in ("sht3x", "sht4x"):
                from simdev import sht3x
                model = sht3x.SHT3x if d == "sht3x" else sht3x.SHT4x
                self.devices[s["address"]] = model(s["name"], s)

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
