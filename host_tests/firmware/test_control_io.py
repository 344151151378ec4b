# dual: runs on CPython (pytest) and MicroPython (test_dual_on_micropython.py)
"""The control shell (fieldlink/control_io.py) with stand-in drivers and a stepped clock:
hardware set only when a value changes, the flash file written only when a command changes a
record (atomically, read back at boot), readings reach the rules before the app; and the
output drivers' arithmetic (drivers/output.py)."""
import asyncio
import json
import os

from dualsupport import rmtree, tmpdir

from fieldlink import control_io
from fieldlink.control_rec import output as Output
from fieldlink.drivers import output


class Clock:
    def __init__(self):
        self.t = 0

    def uptime_ms(self):
        return self.t


class Driver:
    def __init__(self):
        self.sets = []

    def set(self, v):
        self.sets.append(v)


class Sup:
    """What the shell reads of the supervisor, and what it sends."""
    state = 3  # link.S_STREAM
    down_since = None

    def __init__(self):
        self.sent = []

    async def _send(self, text):
        self.sent.append(json.loads(text))


RULE = {"n": "env.temperature", "above": 26.0, "below": 24.0, "when_above": 1,
        "when_below": 0}


def _shell(d, restore="last", clock=None):
    built = [(Output("fan", "digital", 0), Driver(), restore),
             (Output("heater", "pwm", 0.0), Driver(), "safe")]
    c = control_io.Control(built, 10, clock or Clock(), path=d + "/outputs.json")
    return c, [b[1] for b in built]


def _desired(c, sup, out, full=False):
    asyncio.run(c.desired(sup, json.dumps({"t": "desired", "out": out, "full": full})))


def test_boot_sets_each_output_once_at_safe():
    d = tmpdir()
    try:
        c, drv = _shell(d)
        assert drv[0].sets == [0] and drv[1].sets == [0.0]
        assert "outputs.json" not in os.listdir(d)  # nothing applied: nothing written
    finally:
        rmtree(d)


def test_a_command_sets_the_driver_writes_flash_once_and_reports():
    d = tmpdir()
    try:
        c, drv = _shell(d)
        sup = Sup()
        first = json.loads(c.welcome())["out"]  # the whole state, as after a welcome
        assert first == {"fan": {"v": 0, "ver": 0, "why": "boot"},
                         "heater": {"v": 0.0, "ver": 0, "why": "boot"}}
        _desired(c, sup, {"fan": {"ver": 2, "v": 1}})
        assert drv[0].sets == [0, 1]
        assert sup.sent == [{"t": "reported", "out": {"fan": {"v": 1, "ver": 2,
                                                              "why": "command"}}}]
        with open(d + "/outputs.json") as f:
            assert json.load(f) == {"fan": {"ver": 2, "v": 1, "rule": None}}
        os.remove(d + "/outputs.json")
        _desired(c, sup, {"fan": {"ver": 2, "v": 1}})  # a resend: no write, no report
        _desired(c, sup, {"fan": {"ver": 1, "v": 0}})  # older: the same
        assert "outputs.json" not in os.listdir(d) and len(sup.sent) == 1
        assert drv[0].sets == [0, 1]
        assert sorted(os.listdir(d)) == []  # no temporary left either
    finally:
        rmtree(d)


def test_restore_last_from_the_file_and_safe_for_the_others():
    d = tmpdir()
    try:
        c, _ = _shell(d)
        _desired(c, Sup(), {"fan": {"ver": 3, "v": 1}, "heater": {"ver": 4, "v": 0.5}})
        again, drv = _shell(d)
        assert drv[0].sets == [1] and drv[1].sets == [0.0]  # heater's restore: safe
        assert again.core.outputs[0].ver == 3 and again.core.outputs[1].ver == 0
        # a cut between remove and rename (FAT) leaves only the whole temporary: taken
        os.rename(d + "/outputs.json", d + "/outputs.json.tmp")
        third, drv = _shell(d)
        assert drv[0].sets == [1]
        with open(d + "/outputs.json.tmp", "w") as f:
            f.write('{"fan": {"ver": 3, "v": 1')  # cut mid-write, no other file
        fourth, drv = _shell(d)
        assert drv[0].sets == [0]
    finally:
        rmtree(d)


def test_readings_reach_the_rules_before_the_app_and_rule_switches_are_not_saved():
    d = tmpdir()
    try:
        c, drv = _shell(d)
        sup = Sup()
        _desired(c, sup, {"fan": {"ver": 1, "v": 0, "rule": RULE}})
        os.remove(d + "/outputs.json")
        seen = []
        c._emit = lambda n, v, u, e: seen.append((n, v, drv[0].sets[-1]))
        c.emit("env.temperature", 27.0, "C", None)
        c.emit("env.humidity", 50.0, "%RH", None)
        c.emit("env.temperature", 25.0, "C", None)
        c.emit("env.temperature", 23.0, "C", None)
        assert seen == [("env.temperature", 27.0, 1), ("env.humidity", 50.0, 1),
                        ("env.temperature", 25.0, 1), ("env.temperature", 23.0, 0)]
        assert "outputs.json" not in os.listdir(d)
        assert c.core.dirty  # to be reported by the timer while streaming
    finally:
        rmtree(d)


def test_driver_arithmetic():
    assert output.duty_u16(0.0) == 0 and output.duty_u16(1.0) == 65535
    assert output.duty_u16(0.5) == 32768 and output.duty_u16(1.2) == 65535
    assert output.servo_u16(0, 50, 500, 2500, 180) == 1638     # 0.5 ms of 20 ms
    assert output.servo_u16(90, 50, 500, 2500, 180) == 4915    # 1.5 ms
    assert output.servo_u16(180, 50, 500, 2500, 180) == 8192   # 2.5 ms

    class Pin:
        v = None

        def value(self, v):
            self.v = v

    class Pwm:
        d = None

        def duty_u16(self, d):
            self.d = d
    p = Pin()
    output.Digital(p, active_low=True).set(1)
    assert p.v == 0
    output.Digital(p).set(1)
    assert p.v == 1
    w = Pwm()
    output.Pwm(w, active_low=True).set(0.25)
    assert w.d == 49151
    output.Servo(w, 50, 500, 2500, 180).set(45)
    assert w.d == output.servo_u16(45, 50, 500, 2500, 180)
