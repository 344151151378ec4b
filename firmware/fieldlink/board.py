"""The one door hardware comes in through: reads the board file (board.json on the board's
flash) and builds the buses and sensor drivers it describes. No GPIO number appears anywhere
else in the firmware; the same files run on an ESP32 and on the virtual board."""
import json

# The one driver table: name -> (module under fieldlink, class, what it is attached to: an
# "i2c" or "onewire" bus, a "pin", an "adc" (a pin with an ADC), or None). The host's
# `fieldlink boards validate` reads it too (tools/fieldlink_tools/boards.py).
DRIVERS = {
    "bme280": ("drivers.bme280", "BME280", "i2c"),
    "bmp280": ("drivers.bme280", "BME280", "i2c"),
    "sht3x": ("drivers.sht3x", "SHT3x", "i2c"),
    "sht4x": ("drivers.sht3x", "SHT4x", "i2c"),
    "ds18b20": ("drivers.ds18b20", "DS18B20", "onewire"),
    "dht22": ("drivers.dht", "DHT22", "pin"),
    "analog": ("drivers.analog", "Analog", "adc"),
    "chip_temp": ("drivers.chip_temp", "ChipTemp", None),
    "simulated": ("simulated", "Simulated", None),  # no hardware: not a driver
}
BUS_TYPES = ("i2c", "onewire")
# Readings are named "<sensor>.<quantity>" with a unit; the collector refuses names over 64
# chars and units over 16 (every resend of such a reading would be refused again).
NAME_MAX = 32
QUANTITY_MAX = 31
UNIT_MAX = 16
_ATTN = {0: "ATTN_0DB", 2.5: "ATTN_2_5DB", 6: "ATTN_6DB", 11: "ATTN_11DB"}


def _need(d, key, path, types, what):
    if key not in d:
        raise ValueError("board.json: %s%s: required (%s)" % (path, key, what))
    v = d[key]
    if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
        raise ValueError("board.json: %s%s: expected %s, got %r" % (path, key, what, v))
    return v


def _pin(d, key, path):
    v = _need(d, key, path, (int,), "a GPIO number")
    if v < 0:
        raise ValueError("board.json: %s%s: expected a GPIO number, got %r" % (path, key, v))
    return v


def check(data):
    """Structural check of a board dict; raises ValueError naming the key. (The chips' pin
    rules are checked on the host: `fieldlink boards validate`.)"""
    if not isinstance(data, dict):
        raise ValueError("board.json: expected an object")
    _need(data, "name", "", (str,), "the board's name")
    _need(data, "chip", "", (str,), "the chip, e.g. esp32")
    buses = _need(data, "buses", "", (dict,), "an object of buses")
    for bname, bus in buses.items():
        p = "buses.%s." % bname
        if not isinstance(bus, dict):
            raise ValueError("board.json: buses.%s: expected an object" % bname)
        t = _need(bus, "type", p, (str,), "i2c or onewire")
        if t not in BUS_TYPES:
            raise ValueError("board.json: %stype: expected i2c or onewire, got %r" % (p, t))
        if t == "i2c":
            _pin(bus, "scl", p)
            _pin(bus, "sda", p)
        else:
            _pin(bus, "pin", p)
    sensors = _need(data, "sensors", "", (list,), "a list of sensors")
    seen = []
    for i, s in enumerate(sensors):
        p = "sensors[%d]." % i
        if not isinstance(s, dict):
            raise ValueError("board.json: sensors[%d]: expected an object" % i)
        name = _need(s, "name", p, (str,), "a name without dots")
        if not name or "." in name or name == "*" or name in seen or len(name) > NAME_MAX:
            raise ValueError("board.json: %sname: %r is empty, has a dot, is taken or is "
                             "longer than %d chars" % (p, name, NAME_MAX))
        seen.append(name)
        drv = _need(s, "driver", p, (str,), "a driver name")
        if drv not in DRIVERS:
            raise ValueError("board.json: %sdriver: unknown %r (known: %s)"
                             % (p, drv, ", ".join(sorted(DRIVERS))))
        kind = DRIVERS[drv][2]
        if kind in BUS_TYPES:
            b = _need(s, "bus", p, (str,), "the name of a bus")
            if b not in buses or buses[b].get("type") != kind:
                raise ValueError("board.json: %sbus: %r is not a %s bus in buses"
                                 % (p, b, kind))
            if kind == "i2c":
                _need(s, "address", p, (int,), "a 7-bit I2C address")
        elif kind == "pin" or kind == "adc":  # (which pins have an ADC: the host checks)
            _pin(s, "pin", p)
        for key, most in (("quantity", QUANTITY_MAX), ("unit", UNIT_MAX)):
            if key in s:
                v = _need(s, key, p, (str,), "a string")
                if not v or len(v) > most or (key == "quantity" and "." in v):
                    raise ValueError("board.json: %s%s: expected 1-%d chars%s, got %r"
                                     % (p, key, most, " without dots" if key == "quantity"
                                        else "", v))
    led = data.get("led")
    if led is not None:
        if not isinstance(led, dict):
            raise ValueError("board.json: led: expected an object or null")
        _pin(led, "pin", "led.")
    if data.get("outputs") is not None:  # (checked where they are built)
        from fieldlink.drivers import output_boot
        output_boot.check(data, _need, _pin)
    return data


class Board:
    def __init__(self, data):
        self.data = check(data)
        self.name = data["name"]
        self.title = data.get("title", self.name)
        self.chip = data["chip"]
        self._buses = {}

    def bus(self, name):
        """The bus object for a name in "buses", built once."""
        b = self._buses.get(name)
        if b is None:
            spec = self.data["buses"][name]
            import machine
            if spec["type"] == "i2c":
                freq = spec.get("freq", 100000)
                scl, sda = machine.Pin(spec["scl"]), machine.Pin(spec["sda"])
                if spec.get("soft"):
                    b = machine.SoftI2C(scl=scl, sda=sda, freq=freq)
                else:
                    b = machine.I2C(spec.get("id", 0), scl=scl, sda=sda, freq=freq)
            else:
                import onewire
                b = onewire.OneWire(machine.Pin(spec["pin"]))
            self._buses[name] = b
        return b

    def build_sensor(self, s):
        mod, cls, kind = DRIVERS[s["driver"]]
        m = __import__("fieldlink." + mod, None, None, (cls,))
        ctor = getattr(m, cls)
        name = s["name"]
        d = s["driver"]
        if kind == "i2c":
            bus = self.bus(s["bus"])
            if d == "bmp280":
                return ctor(bus, s["address"], name, humidity=False)
            return ctor(bus, s["address"], name)
        if kind == "onewire":
            return ctor(self.bus(s["bus"]), s.get("rom"), name)
        if d == "dht22":
            import machine
            return ctor(machine.Pin(s["pin"], machine.Pin.OPEN_DRAIN), name)
        if d == "analog":
            import machine
            adc = machine.ADC(machine.Pin(s["pin"]))
            attn = _ATTN.get(s.get("atten", 11))
            if attn and hasattr(adc, "atten"):
                adc.atten(getattr(machine.ADC, attn))
            return ctor(adc, name, s.get("scale", 1.0), s.get("offset", 0.0),
                        s.get("unit", "V"), s.get("quantity", "voltage"))
        if d == "simulated":
            return ctor(name, s.get("seed", 1), s.get("quantities"))
        return ctor(name)

    def build_sensors(self):
        """One driver object per entry in "sensors". Drivers do no I/O until read, so a
        missing device shows up as missing readings, not as a failed boot."""
        return [self.build_sensor(s) for s in self.data["sensors"]]

    def outputs(self):
        """[(control.Output, driver, restore mode)] for "outputs": each on its machine.Pin,
        driven at its safe level from the start (drivers/output_boot.py makes the rest)."""
        import machine
        from fieldlink.drivers import output_boot
        r = self.data.get("restore", "safe")
        return [output_boot.make(o, machine.Pin(o["pin"]), machine, r)
                for o in self.data["outputs"]]

    def led(self):
        """An object with on()/off() for the board's LED, or None if it has none."""
        spec = self.data.get("led")
        if not spec:
            return None
        import machine
        pin = machine.Pin(spec["pin"], machine.Pin.OUT)
        if spec.get("neopixel"):
            return _PixelLed(pin)
        return machine.Signal(pin, invert=bool(spec.get("active_low")))


class _PixelLed:
    """An addressable RGB LED (S3-DevKitC-1) driven like a plain one: dim white or off."""

    def __init__(self, pin):
        import neopixel
        self._np = neopixel.NeoPixel(pin, 1)

    def on(self):
        self._np[0] = (8, 8, 8)
        self._np.write()

    def off(self):
        self._np[0] = (0, 0, 0)
        self._np.write()

    def value(self, v=None):
        if v is not None:
            self.on() if v else self.off()


def load(src="board.json"):
    """A Board from a path to a board file or from an already-parsed dict."""
    if isinstance(src, dict):
        return Board(src)
    try:
        with open(src) as f:
            data = json.load(f)
    except OSError as e:
        raise ValueError("board.json: cannot open %s (%s)" % (src, e))
    except ValueError as e:
        raise ValueError("board.json: %s is not valid JSON (%s)" % (src, e))
    return Board(data)
