"""Simulated readings for a board with nothing attached (so `make demo` works anywhere):
a seeded random walk per channel, deterministic for a given seed. Pure: no clock."""


class Simulated:
    # (quantity, unit, start, step, low, high)
    _SPEC = (("temperature", "C", 21.0, 0.05, -10.0, 45.0),
             ("humidity", "%RH", 45.0, 0.2, 0.0, 100.0),
             ("pressure", "Pa", 101325.0, 5.0, 95000.0, 106000.0))

    def __init__(self, name="sim", seed=1, quantities=None):
        self.name = name
        spec = [s for s in self._SPEC if quantities is None or s[0] in quantities]
        self._spec = spec
        self.channels = tuple((s[0], s[1]) for s in spec)
        self._values = [s[2] for s in spec]
        self._state = (seed & 0x7FFFFFFF) or 1

    def _rand(self):
        """A 31-bit LCG (glibc constants) -> float in [-1, 1): same sequence everywhere."""
        self._state = (self._state * 1103515245 + 12345) & 0x7FFFFFFF
        return self._state / 0x40000000 - 1.0

    def start(self):
        return 0

    def read(self):
        out = []
        for i, s in enumerate(self._spec):
            v = self._values[i] + self._rand() * s[3]
            v = min(max(v, s[4]), s[5])
            self._values[i] = v
            out.append(round(v, 2))
        return tuple(out)
