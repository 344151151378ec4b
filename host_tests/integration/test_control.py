"""Outputs driven over the link, on the real firmware on the virtual board (issue 14): the
virtual board's pins (vboard_pins.json in its flash) are what the firmware set; the server is
control_server.py, speaking the protocol's control messages. Every wait has a deadline."""
import copy
import json
import os
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from control_server import ControlServer  # noqa: E402
from test_stream import wait as _wait  # noqa: E402

OUTPUTS = [
    {"name": "fan", "type": "digital", "pin": 26, "safe": 0},
    {"name": "heater", "type": "pwm", "pin": 27, "freq": 1000, "safe": 0.0},
    {"name": "led", "type": "digital", "pin": 13, "active_low": True, "safe": 0},
    {"name": "vent", "type": "servo", "pin": 25, "freq": 50, "min_us": 500, "max_us": 2500,
     "range_deg": 180, "safe": 90},
]
BOARD = {"name": "virtual", "chip": "unix", "buses": {}, "outputs": OUTPUTS,
         "sensors": [{"name": "sim", "driver": "simulated", "seed": 7}]}


def pins(b):
    try:
        with open(os.path.join(b.flash, "vboard_pins.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def wait(pred, timeout, what, board=None):
    """test_stream's wait, the board's log tail in the message."""
    tail = ("\n" + "\n".join(board.lines()[-30:])) if board is not None else ""
    try:
        return _wait(pred, timeout, what)
    except AssertionError as e:
        raise AssertionError(str(e) + tail)


def wait_pin(b, pin, timeout=30, **want):
    def ok():
        p = pins(b).get(str(pin))
        return p if p is not None and all(p.get(k) == v for k, v in want.items()) else None
    return wait(ok, timeout, "pin %d at %r (have %r)" % (pin, want, pins(b).get(str(pin))), b)


def test_desired_sets_the_pin_and_the_device_reports_it(sim_board):
    with ControlServer() as s:
        b = sim_board(s.url, board_data=BOARD)
        # the whole state after the welcome: every output at safe, nothing applied yet
        s.wait_state("vent", v=90, ver=0, why="boot")
        assert pins(b)["26"] == {"v": 0} and pins(b)["13"] == {"v": 1}  # LED off: high
        assert pins(b)["27"] == {"freq": 1000, "duty_u16": 0}
        s.set("fan", v=1)
        s.wait_state("fan", v=1, ver=1, why="command")
        assert pins(b)["26"] == {"v": 1}
        s.set("heater", v=0.5)
        s.wait_state("heater", v=0.5, ver=1, why="command")
        assert pins(b)["27"] == {"freq": 1000, "duty_u16": 32768}
        s.set("led", v=1)
        s.wait_state("led", v=1, why="command")
        assert pins(b)["13"] == {"v": 0}  # active low: on is low
        s.set("vent", v=180)
        s.wait_state("vent", v=180, why="command")
        assert pins(b)["25"] == {"freq": 50, "duty_u16": 8192}  # 2500 us of 20 ms
        # refused: a value out of range, an unknown output; nothing changes
        s.set("heater", v=1.5)
        s.wait_state("heater", why="refused", err="duty must be 0.0-1.0", ver=1)
        s.send_raw({"t": "desired", "out": {"pump": {"ver": 1, "v": 1}}, "full": False})
        s.wait_state("pump", why="refused", err="unknown output")
        assert pins(b)["27"]["duty_u16"] == 32768
        # an older record after a newer one: ignored (then a newer change, to know the
        # older one has been read before it)
        s.send_raw({"t": "desired", "out": {"fan": {"ver": 1, "v": 0}}, "full": False})
        s.set("led", v=0)
        s.wait_state("led", v=0, ver=2)
        assert pins(b)["26"] == {"v": 1}
        assert not [r for r in s.reported if r.get("fan", {}).get("v") == 0
                    and r["fan"]["why"] == "command"]
        assert not b.lines("Traceback")


def test_a_change_made_offline_is_applied_after_the_reconnect(sim_board):
    with ControlServer() as s:
        b = sim_board(s.url, board_data=BOARD, failsafe_s=60)
        s.wait_state("fan", v=0, why="boot")
        s.offline()
        wait(lambda: not s.connected(), 20, "the device dropped")
        s.set("fan", v=1)   # kept: the device is not there
        s.set("fan", v=1)   # and again: ver 2
        n = s.refused
        wait(lambda: s.refused > n, 20, "the device trying again (refused)", b)
        assert pins(b)["26"] == {"v": 0}
        s.online()
        s.wait_state("fan", v=1, ver=2, why="command", timeout=40)
        assert pins(b)["26"] == {"v": 1}
        assert s.welcomes >= 2


def test_power_cut_restores_the_last_value_or_safe_per_config(sim_board, tmp_path):
    board = copy.deepcopy(BOARD)
    board["restore"] = "last"                 # the board's default ...
    board["outputs"][1]["restore"] = "safe"   # ... and one output's own
    flash = tmp_path / "flash-cut"
    with ControlServer() as s:
        b = sim_board(s.url, board_data=board, flash=flash, failsafe_s=60)
        s.wait_state("fan", why="boot")
        s.set("fan", v=1)
        s.set("heater", v=0.7)
        s.wait_state("heater", v=0.7, why="command")
        s.wait_state("fan", v=1, why="command")
        saved = json.loads((flash / "outputs.json").read_text())
        assert saved["fan"] == {"ver": 1, "v": 1, "rule": None}
        s.offline()
        b.power_cut()                          # kill -9
        os.remove(flash / "vboard_pins.json")  # what the pins show now is the new boot's
        b.start()
        wait_pin(b, 26, v=1)                   # restored before any link
        assert pins(b)["27"]["duty_u16"] == 0  # safe
        wait(lambda: b.lines("output fan = 1 (boot, ver 1)"), 30, "the boot's log line", b)
        s.forget()
        s.online()
        s.wait_state("heater", v=0.7, ver=1, why="command", timeout=40)
        assert s.state["fan"] == {"v": 1, "ver": 1, "why": "boot"}  # ver 1 was applied
        assert pins(b)["26"] == {"v": 1}


def test_link_lost_longer_than_failsafe_s_goes_safe_then_back(sim_board):
    with ControlServer() as s:
        b = sim_board(s.url, board_data=BOARD, failsafe_s=2)
        s.wait_state("fan", why="boot")
        s.set("fan", v=1)
        s.set("heater", v=0.25)
        s.wait_state("heater", v=0.25, why="command")
        s.offline()
        wait_pin(b, 26, v=0)
        wait_pin(b, 27, duty_u16=0)
        assert b.lines("output fan = 0 (failsafe")
        s.forget()
        s.online()
        wait_pin(b, 26, timeout=40, v=1)
        wait_pin(b, 27, duty_u16=16384)
        s.wait_state("fan", v=1, ver=1, why="command")


HEAT_RULE = {"n": "env.temperature", "above": 26.0, "below": 24.0, "when_above": 0.0,
             "when_below": 1.0}


def holds_the_band(b, timeout, want=5):
    """Watch the pins file until the heater (pin 27) switched `want` times: the temperature
    (from the board's thermal model) stays within the rule's band once it has reached it."""
    seen = []   # (temperature, heater duty) as the pins file shows them
    switches = 0
    deadline = time.monotonic() + timeout
    while switches < want and time.monotonic() < deadline:
        p = pins(b)
        if "_thermal" in p and "27" in p:
            on = p["27"]["duty_u16"] > 0
            if seen and on != seen[-1][1]:
                switches += 1
            seen.append((p["_thermal"]["c"], on))
        time.sleep(0.05)    # the pace of looking (the wait is the deadline's)
    assert switches >= want, ("the heater did not cycle", seen[-20:],
                              "\n".join(b.lines()[-30:]))
    first = next(i for i, (t, _) in enumerate(seen) if t >= 24.0)
    temps = [t for t, _ in seen[first:]]
    # the band, with what one sampling interval of lag and the noise add
    assert 23.0 < min(temps) and max(temps) < 27.0, (min(temps), max(temps))


def test_the_rule_holds_the_temperature_band_with_no_server(sim_board, tmp_path):
    board = {"name": "virtual", "chip": "unix",
             "buses": {"i2c0": {"type": "i2c", "id": 0, "scl": 22, "sda": 21}},
             "sensors": [{"name": "env", "driver": "bme280", "bus": "i2c0", "address": 118}],
             "outputs": [{"name": "heater", "type": "pwm", "pin": 27, "safe": 0.0,
                          "rule": HEAT_RULE}]}
    flash = tmp_path / "flash-loop"
    flash.mkdir()
    # the room: 20 C outside, the heater full on would take it to 32 C, 8 s time constant
    (flash / "vboard.json").write_text(json.dumps({"seed": 3, "thermal": {
        "sensor": "env", "ambient_c": 20.0, "tau_s": 8.0, "noise_c": 0.02,
        "pins": {"27": 12.0}}}))
    b = sim_board("ws://127.0.0.1:9/ws", board_data=board, flash=flash, failsafe_s=60,
                  sample_interval_s=0.1)
    holds_the_band(b, timeout=150)
    assert b.lines("output heater = 1.0 (rule") and b.lines("output heater = 0.0 (rule")


MEM = re.compile(r"INFO app: mem readings=(\d+) seq=\d+ alloc=(\d+) ")


def test_commands_while_streaming_fast_do_not_grow_the_heap(sim_board):
    """test_memory's check with outputs: 6,000 readings at 5 ms while the server changes an
    output every 50 ms (each one a desired message, a record module loaded and dropped, a
    driver set, a report): no MemoryError, and the live heap after gc at reading 6,000 is the
    one at 1,000. The heap: test_memory's margin over `bench heap --board outputs`."""
    with ControlServer() as s:
        b = sim_board(s.url, board_data=BOARD, sample_interval_s=0.005, heapsize="176k")
        s.wait_state("led", why="boot")
        n = 0
        deadline = time.monotonic() + 180
        while not b.lines("INFO app: mem readings=6000") and time.monotonic() < deadline:
            s.set("led", v=n % 2)
            n += 1
            time.sleep(0.05)  # the pace of the changes (not a wait for anything)
        b.wait_for_line("INFO app: mem readings=6000", timeout=10)
        s.wait_state("led", ver=n, timeout=30)  # every change reached the board
        assert not b.lines("MemoryError"), b.lines("MemoryError")[:5]
        assert b.boots == 1 and not b.lines("Traceback")
        mem = {int(m.group(1)): int(m.group(2))
               for m in map(MEM.search, b.lines("INFO app: mem")) if m}
        assert n > 50 and mem[6000] <= mem[1000] + 1024, (n, mem)


PROBE = """
import sys
sys.path[0] = ""
from fieldlink import start
cfg = start.load_settings("config.json")
name, sensors, outputs = start.build_sensors(cfg.board_file)
app = start.make_app(cfg, name, sensors, outputs=outputs)
print("MODULES", " ".join(sorted(m for m in sys.modules if m.startswith("fieldlink"))))
"""


def _boot_modules(tmp_path, board):
    from fieldlink_tools import sim, upy
    flash = str(tmp_path / "flash-probe")
    sim.prepare_flash(flash, sim.make_config("ws://127.0.0.1:9/ws", "p-1", "t", {}),
                      "virtual", board)
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    r = upy.run(script=probe, path=sim.mp_dirs(), heapsize="512k", cwd=flash, timeout=60)
    line = [l for l in r.stdout.splitlines() if l.startswith("MODULES")]
    assert r.returncode == 0 and line, r.stdout[-2000:] + r.stderr[-2000:]
    return set(line[0].split()[1:])


def test_a_board_without_outputs_loads_no_control_code(tmp_path):
    none = _boot_modules(tmp_path, {k: v for k, v in BOARD.items() if k != "outputs"})
    assert not [m for m in none if "control" in m or "output" in m], none
    some = _boot_modules(tmp_path, BOARD)
    # with outputs: the core, the shell and the drivers stay; the boot-only parts do not
    assert {"fieldlink.control", "fieldlink.control_io", "fieldlink.drivers.output"} <= some
    assert not {"fieldlink.control_rec", "fieldlink.drivers.output_boot",
                "fieldlink.board"} & some, some
