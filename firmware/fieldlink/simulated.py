"""Simulated readings for a board with nothing attached (so `make demo` works anywhere):
a seeded random walk per channel, deterministic for a given seed. Pure: no clock.
Not in drivers/: it has no hardware, and a board with only this sensor never loads the
drivers package (its error classes)."""


class Simulated:
    # (quantity, unit, start, step, low, high)
    _SPEC = (("temperature", "C", 21.0, 0.05, -10.0, 45.0),
             ("humidity", "%RH", 45.0, 0.2, 0.0, 100.0),
             ("pressure", "Pa", 101325.0, 5.0, 95000.0, 106000.0))

    def __init__(self, name="sim", seed=1, quantities=None):
        self.name = name
        self._spec = []
        self._values = []
        channels = []
        for s in self._SPEC:
            if quantities is None or s[0] in quantities:
                self._spec.append(s)
                self._values.append(s[2])
                channels.append(s[:2])
        self.channels = tuple(channels)
        self._state = (seed & 0x7FFFFFFF) or 1

    def start(self):
        return 0

    def read(self):
        out = []
        for i, s in enumerate(self._spec):
            # a 31-bit LCG (glibc constants) -> a step in [-1, 1): the same sequence everywhere
            self._state = (self._state * 1103515245 + 12345) & 0x7FFFFFFF
            v = self._values[i] + (self._state / 0x40000000 - 1.0) * s[3]
            v = min(max(v, s[4]), s[5])
            self._values[i] = v
            out.append(round(v, 2))
        return tuple(out)
