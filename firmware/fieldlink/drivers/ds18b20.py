"""Maxim DS18B20 temperature sensors on a 1-Wire bus (several may share one): temperature
in C. The scratchpad's Dallas CRC and its fixed bits are checked; the 85 C power-on value is
treated as suspect. Works with MicroPython's `onewire.OneWire`."""
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):  # type: ignore[misc]  # the stubs' const is generic
        return x

from fieldlink.drivers import CRCError, DeviceMissing, SuspectReading, sleep_ms
from fieldlink.drivers.crc import crc8_dallas

_SKIP_ROM = const(0xCC)
_MATCH_ROM = const(0x55)
_CONVERT_T = const(0x44)
_READ_SCRATCHPAD = const(0xBE)
_POWER_ON_RAW = const(0x0550)  # 85 C: the register's reset value (datasheet Table 1 note)
_CONVERT_MS = {9: 94, 10: 188, 11: 375, 12: 750}  # tCONV max per resolution (Table 2)


def resolution(config):
    """Resolution in bits from the configuration register (byte 4): R1R0 in bits 6:5."""
    return 9 + ((config >> 5) & 3)


def temperature(raw, bits=12):
    """16-bit two's-complement register value -> C (datasheet Table 1: 0x07D0 = +125,
    0x0191 = +25.0625, 0xFFF8 = -0.5, 0xFC90 = -55). Undefined low bits at lower
    resolutions are ignored."""
    raw &= 0xFFFF
    raw &= ~((1 << (12 - bits)) - 1) & 0xFFFF
    if raw & 0x8000:
        raw -= 0x10000
    return raw / 16


def check_scratchpad(sp):
    """Validate the 9 scratchpad bytes; raise DeviceMissing / CRCError; return raw temp."""
    if sp[0] == sp[1] == sp[2] == sp[3] == sp[4] == sp[8] == 0xFF:
        raise DeviceMissing("no device answered (all 1s)")
    c = crc8_dallas(sp, 0, 8)
    if c != sp[8]:
        raise CRCError("scratchpad crc 0x%02x, computed 0x%02x" % (sp[8], c))
    # Byte 4 (configuration) always has bits 4..0 set and bit 7 clear; an all-zero
    # scratchpad (bus held low) passes the CRC, so this check is what catches it.
    if sp[4] & 0x9F != 0x1F:
        raise DeviceMissing("bus stuck (config byte 0x%02x is impossible)" % sp[4])
    return sp[0] | (sp[1] << 8)


def parse_rom(rom):
    """A ROM code given as hex text or 8 bytes -> bytes; its own CRC must check out."""
    if isinstance(rom, str):
        import binascii
        rom = binascii.unhexlify(rom)
    rom = bytes(rom)
    if len(rom) != 8 or crc8_dallas(rom) != 0:
        raise ValueError("bad 1-Wire ROM code %s (length or CRC)" % rom)
    return rom


class DS18B20:
    """One DS18B20. rom=None addresses the only device on the bus (Skip ROM)."""
    channels = (("temperature", "C"),)

    def __init__(self, ow, rom=None, name="temp"):
        self.name = name
        self.ow = ow
        self.rom = parse_rom(rom) if rom is not None else None
        self._sp = bytearray(9)
        self._last = None
        self._bits = 12
        if self.rom is None:
            self._what = "ds18b20"
        else:
            self._what = "ds18b20 %s" % "".join("%02x" % b for b in self.rom)

    def _select(self):
        if not self.ow.reset():
            raise DeviceMissing("%s: no presence pulse on the 1-Wire bus" % self._what)
        if self.rom is None:
            self.ow.writebyte(_SKIP_ROM)
        else:
            self.ow.writebyte(_MATCH_ROM)
            self.ow.write(self.rom)

    def start(self):
        try:
            self._select()
            self.ow.writebyte(_CONVERT_T)
        except OSError as e:
            raise DeviceMissing("%s: bus error %s" % (self._what, e))
        return _CONVERT_MS.get(self._bits, 750)

    def read(self):
        try:
            self._select()
            self.ow.writebyte(_READ_SCRATCHPAD)
            self.ow.readinto(self._sp)
        except OSError as e:
            raise DeviceMissing("%s: bus error %s" % (self._what, e))
        try:
            raw = check_scratchpad(self._sp)
        except (DeviceMissing, CRCError) as e:
            raise type(e)("%s: %s" % (self._what, e))
        self._bits = resolution(self._sp[4])
        t = temperature(raw, self._bits)
        # 85 C is also a real temperature: believe it only when the last good reading was
        # already close to it; otherwise the conversion most likely never ran (brown-out).
        if raw == _POWER_ON_RAW and (self._last is None or self._last < 80):
            raise SuspectReading("%s: 85 C power-on value (no conversion?)" % self._what)
        self._last = t
        return (t,)

    def measure(self):
        """Blocking start + wait + read, for use outside the sampler."""
        sleep_ms(self.start())
        return self.read()
