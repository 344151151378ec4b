"""Stand-in for MicroPython's `onewire` module on the virtual board: a 1-Wire bus with the
DS18B20 models the board file attaches to this pin (same API as the ESP32's frozen
onewire.OneWire). Faults: absent devices send no presence pulse; a stuck bus (line held low)
shows a 'presence' and reads all zeros."""
import simdev
from simdev.ds18b20 import DS18B20, crc8 as _crc8


class OneWireError(Exception):
    pass


class OneWire:
    SEARCH_ROM = 0xF0
    MATCH_ROM = 0x55
    SKIP_ROM = 0xCC

    def __init__(self, pin):
        self.pin = pin
        self.bus, _ = simdev.find_bus("onewire", pin=getattr(pin, "id", pin))
        self.devices = [DS18B20(s["name"], s) for s in simdev.sensors_on(self.bus)
                        if s.get("driver") == "ds18b20"] if self.bus else []
        self._state = "idle"
        self._selected = []
        self._rx = bytearray()
        self._out = b""

    def _present(self):
        return [d for d in self.devices if simdev.fault(d.name) not in ("absent", "stuck")]

    def _stuck(self):
        return (self.bus is not None and simdev.bus_stuck(self.bus)) or any(
            simdev.fault(d.name) == "stuck" for d in self.devices)

    def reset(self, required=False):
        self._state = "rom"
        self._out = b""
        self._rx = bytearray()
        ok = self._stuck() or bool(self._present())
        if required and not ok:
            raise OneWireError("no presence")
        return ok

    def writebyte(self, b):
        b &= 0xFF
        if self._stuck():
            return
        st = self._state
        if st == "rom":
            if b == self.SKIP_ROM:
                self._selected = self._present()
                self._state = "func"
            elif b == self.MATCH_ROM:
                self._rx = bytearray()
                self._state = "match"
            elif b == 0x33:  # READ ROM: only meaningful with one device
                p = self._present()
                self._out = bytes(p[0].rom) if p else b""
                self._state = "idle"
            else:
                self._state = "idle"
        elif st == "match":
            self._rx.append(b)
            if len(self._rx) == 8:
                self._selected = [d for d in self._present() if d.rom == bytes(self._rx)]
                self._state = "func"
        elif st == "func":
            if b == 0x44:
                for d in self._selected:
                    d.convert()
                self._state = "idle"
            elif b == 0xBE:
                out = bytearray(b"\xff" * 9)  # wired-AND of every selected device
                for d in self._selected:
                    sp = d.scratchpad()
                    for i in range(9):
                        out[i] &= sp[i]
                self._out = bytes(out)
                self._state = "idle"
            elif b == 0x4E:
                self._rx = bytearray()
                self._state = "wsp"
            else:
                self._state = "idle"
        elif st == "wsp":
            self._rx.append(b)
            if len(self._rx) == 3:
                for d in self._selected:
                    d.write_scratchpad(self._rx)
                self._state = "idle"

    def write(self, buf):
        for b in buf:
            self.writebyte(b)

    def readbyte(self):
        if self._stuck():
            return 0
        if self._out:
            b, self._out = self._out[0], self._out[1:]
            return b
        return 0xFF

    def readinto(self, buf):
        for i in range(len(buf)):
            buf[i] = self.readbyte()

    def readbit(self):
        return 0 if self._stuck() else 1

    def writebit(self, value):
        pass

    def select_rom(self, rom):
        self.reset()
        self.writebyte(self.MATCH_ROM)
        self.write(rom)

    def scan(self):
        if self._stuck():
            return []
        return [bytearray(d.rom) for d in sorted(self._present(), key=lambda d: d.rom)]

    def crc8(self, data):
        return _crc8(data)
