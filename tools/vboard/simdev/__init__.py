"""The virtual board's world (MicroPython, not CPython): which simulated devices are attached
(from board.json in the current directory, i.e. the board's flash), their physical values
(seeded random walks, or fixed by knobs) and the fault knobs, read from ./vboard.json and the
env var FIELDLINK_VBOARD (JSON, wins over the file). Knobs:
  {"seed": 1,
   "sensors": {"env": {"fault": "absent" | "bad_crc" | "stuck", "temperature": 22.5, ...}},
   "stuck_bus": ["i2c0"],          every transfer on that bus times out (SDA held low)
   "chip_temp_c": 42.0, "unique_id": "240ac4aabbcc",
   "thermal": {"sensor": "env", "ambient_c": 20.0, "tau_s": 20.0, "noise_c": 0.02,
               "pins": {"27": 15.0, "26": -6.0}}}
`thermal` makes that sensor's temperature a first-order model of a room the board's outputs
heat or cool: it relaxes towards ambient_c + sum(gain * drive) with time constant tau_s, where
drive is a digital pin's level (0/1) or a PWM channel's duty (0-1) as the firmware set them
(machine_io.OUT), on real time, plus seeded noise; the value is published in vboard_pins.json
as "_thermal". So a rule can be tested in a closed loop.
The file is re-read when it changes, so a test can inject and clear faults at run time."""
import json
import os
import time

_DEFAULTS = {"temperature": 21.0, "humidity": 45.0, "pressure": 101325.0, "voltage": 1.65}
_STEP = {"temperature": 0.05, "humidity": 0.2, "pressure": 5.0, "voltage": 0.005}

_cache = {"stamp": None, "knobs": {}, "board": None}
_walk = {}


def _stat(path):
    try:
        st = os.stat(path)
        return (st[6], st[8])
    except OSError:
        return None


def knobs():
    stamp = (_stat("vboard.json"), os.getenv("FIELDLINK_VBOARD"))
    # The unix port's mtime has 1 s resolution, so a same-size rewrite within that second
    # keeps the stamp: a file changed in the last 2 s is re-read on every call.
    fresh = stamp[0] is not None and time.time() - stamp[0][1] < 2
    if stamp != _cache["stamp"] or fresh:
        k = {}
        if stamp[0] is not None:
            try:
                with open("vboard.json") as f:
                    k = json.load(f)
            except (OSError, ValueError) as e:
                print("vboard: ignoring vboard.json:", e)
        if stamp[1]:
            env = json.loads(stamp[1])
            sens = dict(k.get("sensors", {}))
            sens.update(env.get("sensors", {}))
            k.update(env)
            k["sensors"] = sens
        _cache["knobs"] = k
        _cache["stamp"] = stamp
    return _cache["knobs"]


def board():
    """The board file on the flash (cwd): which devices are attached where."""
    if _cache["board"] is None:
        try:
            with open("board.json") as f:
                _cache["board"] = json.load(f)
        except (OSError, ValueError):
            _cache["board"] = {"buses": {}, "sensors": []}
    return _cache["board"]


def sensor_knobs(name):
    return knobs().get("sensors", {}).get(name, {})


def fault(name):
    return sensor_knobs(name).get("fault")


def bus_stuck(bus_name):
    return bus_name in knobs().get("stuck_bus", ())


def seed():
    return int(knobs().get("seed", 1))


class Rng:
    """A 31-bit LCG: the same sequence on every run for a given seed."""

    def __init__(self, s):
        self.s = (s & 0x7FFFFFFF) or 1

    def uniform(self):  # [-1, 1)
        self.s = (self.s * 1103515245 + 12345) & 0x7FFFFFFF
        return self.s / 0x40000000 - 1.0


def _name_seed(name):
    h = seed()
    for c in name:
        h = (h * 31 + ord(c)) & 0x7FFFFFFF
    return h


def _drive(state):
    if "v" in state:
        return state["v"]
    return state.get("duty_u16", 0) / 65535


def thermal(th):
    """The thermal model's temperature now (see the module's doc)."""
    import math
    from simdev import machine_io
    now = time.ticks_ms()
    st = _walk.get("_thermal")
    amb = float(th.get("ambient_c", 20.0))
    if st is None:
        st = _walk["_thermal"] = [float(th.get("start_c", amb)), now, Rng(_name_seed("thermal"))]
    dt = time.ticks_diff(now, st[1]) / 1000
    st[1] = now
    eq = amb
    for pin, gain in th.get("pins", {}).items():
        s = machine_io.OUT.get(int(pin))
        if s is not None:
            eq += float(gain) * _drive(s)
    st[0] += (eq - st[0]) * (1 - math.exp(-dt / float(th.get("tau_s", 20.0))))
    v = st[0] + st[2].uniform() * float(th.get("noise_c", 0.02))
    machine_io.EXTRA["_thermal"] = {"c": v, "eq": eq}
    machine_io.publish()
    return v


def value(sensor, quantity):
    """The physical value a simulated sensor measures now: fixed by a knob, the thermal
    model's, or a bounded seeded random walk around a default."""
    k = sensor_knobs(sensor)
    if quantity in k:
        return float(k[quantity])
    th = knobs().get("thermal")
    if th and quantity == "temperature" and th.get("sensor") == sensor:
        return thermal(th)
    key = sensor + "." + quantity
    st = _walk.get(key)
    if st is None:
        st = _walk[key] = [_DEFAULTS.get(quantity, 1.0), Rng(_name_seed(key))]
    base = _DEFAULTS.get(quantity, 1.0)
    step = _STEP.get(quantity, 0.01)
    v = st[0] + st[1].uniform() * step
    if abs(v - base) > 50 * step:  # keep it near the default
        v = base
    st[0] = v
    return v


def find_bus(type_, **match):
    """(name, spec) of the board's bus of this type whose fields match, else (None, None)."""
    for name, spec in board().get("buses", {}).items():
        if spec.get("type") != type_:
            continue
        if all(spec.get(k, 0 if k == "id" else None) == v for k, v in match.items()):
            return name, spec
    return None, None


def sensors_on(bus_name):
    return [s for s in board().get("sensors", []) if s.get("bus") == bus_name]


def sensor_on_pin(pin, drivers):
    for s in board().get("sensors", []):
        if s.get("pin") == pin and s.get("driver") in drivers:
            return s
    return None


def log(msg):
    print("vboard:", msg)
