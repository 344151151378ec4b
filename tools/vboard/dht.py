"""Stand-in for MicroPython's `dht` module on the virtual board: DHT11/DHT22 on a pin the
board file names, with frames encoded from simulated values. Faults: absent/stuck ->
OSError(ETIMEDOUT) like the real bit-banger; bad_crc -> Exception("checksum error")."""
import simdev


def encode22(rh, t):
    r = int(round(rh * 10))
    tt = int(round(abs(t) * 10)) | (0x8000 if t < 0 else 0)
    b = bytearray((r >> 8, r & 0xFF, tt >> 8, tt & 0xFF, 0))
    b[4] = (b[0] + b[1] + b[2] + b[3]) & 0xFF
    return b


class DHTBase:
    def __init__(self, pin):
        self.pin = pin
        self.buf = bytearray(5)
        self._sensor = simdev.sensor_on_pin(getattr(pin, "id", pin), ("dht22", "dht11"))

    def measure(self):
        s = self._sensor
        f = simdev.fault(s["name"]) if s else "absent"
        if f in ("absent", "stuck"):
            raise OSError(110)  # ETIMEDOUT: no response on the line
        b = encode22(simdev.value(s["name"], "humidity"), simdev.value(s["name"], "temperature"))
        if f == "bad_crc":
            b[4] ^= 0x01
        self.buf[:] = b
        if (b[0] + b[1] + b[2] + b[3]) & 0xFF != b[4]:
            raise Exception("checksum error")


class DHT11(DHTBase):
    def humidity(self):
        return self.buf[0]

    def temperature(self):
        return self.buf[2]


class DHT22(DHTBase):
    def humidity(self):
        return (self.buf[0] << 8 | self.buf[1]) * 0.1

    def temperature(self):
        t = ((self.buf[2] & 0x7F) << 8 | self.buf[3]) * 0.1
        return -t if self.buf[2] & 0x80 else t
