"""The real drivers on the virtual board: MicroPython with tools/vboard's machine, onewire,
dht and esp32 stand-ins, the board file in the flash directory (cwd), knobs in vboard.json
or $FIELDLINK_VBOARD. Every fault knob gives a marked-missing reading and a log line."""
import json
import signal

import pytest

from fieldlink_tools import paths, upy

pytestmark = pytest.mark.micropython

BOARD = json.loads((paths.BOARDS / "virtual" / "board.json").read_text())
EXTRA = [
    {"name": "shed", "driver": "sht4x", "bus": "i2c0", "address": 69},
    {"name": "water2", "driver": "ds18b20", "bus": "ow0", "rom": "28ff4c6a71160300"},
    {"name": "porch", "driver": "dht22", "pin": 15},
    {"name": "battery", "driver": "analog", "pin": 34, "atten": 11, "scale": 2.0},
    {"name": "chip", "driver": "chip_temp"},
]

# Reads every sensor once through fieldlink.sampling (start, wait, read, filters, emit) and
# prints one JSON line per reading plus the log lines.
SAMPLE = """
import json
from fieldlink import board, sampling
b = board.load("board.json")
logs = []
s = sampling.Sampler(b.build_sensors(), {}, logs.append)
out = []
def emit(name, value, unit, err):
    out.append([name, value, unit, err])
for i in range(ROUNDS):
    s.tick(i * 5000, emit)
print("READINGS " + json.dumps(out))
print("LOGS " + json.dumps(logs))
"""


def _fix_rom(rom7):
    crc = 0
    for b in bytes.fromhex(rom7):
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0x8C if crc & 1 else crc >> 1
    return rom7 + "%02x" % crc


EXTRA[1]["rom"] = _fix_rom("28ff4c6a711603"[:-2] + "77")


def run_board(tmp_path, code, knobs=None, env=None, sensors=None, timeout=60):
    b = dict(BOARD)
    b["sensors"] = BOARD["sensors"] + EXTRA if sensors is None else sensors
    (tmp_path / "board.json").write_text(json.dumps(b))
    if knobs is not None:
        (tmp_path / "vboard.json").write_text(json.dumps(knobs))
    # a roomy heap: these tests are about the drivers; memory is measured elsewhere
    return upy.run(code=code, path=(paths.FIRMWARE, paths.VBOARD_MP), cwd=tmp_path,
                   env=env, timeout=timeout, heapsize="512k")


def sample(tmp_path, knobs=None, rounds=1, env=None):
    r = run_board(tmp_path, SAMPLE.replace("ROUNDS", str(rounds)), knobs, env)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict(l.split(" ", 1) for l in r.stdout.splitlines()
                 if l.startswith(("READINGS ", "LOGS ")))
    readings = {}
    for name, value, unit, err in json.loads(lines["READINGS"]):
        readings.setdefault(name, []).append((value, unit, err))
    return readings, json.loads(lines["LOGS"])


FIXED = {"seed": 3, "chip_temp_c": 47.5, "sensors": {
    "env": {"temperature": 22.5, "pressure": 100000.0, "humidity": 40.0},
    "air": {"temperature": -12.25, "humidity": 63.0},
    "shed": {"temperature": 30.0, "humidity": 2.0},
    "water": {"temperature": 25.0625}, "water2": {"temperature": -10.125},
    "porch": {"temperature": -10.1, "humidity": 65.2},
    "battery": {"voltage": 1.9}}}


def test_every_driver_reads_the_simulated_physical_values(tmp_path):
    r, logs = sample(tmp_path, FIXED)
    val = {k: v[0][0] for k, v in r.items()}
    assert abs(val["env.temperature"] - 22.5) <= 0.01
    assert abs(val["env.pressure"] - 100000.0) <= 1.0
    assert abs(val["env.humidity"] - 40.0) <= 0.05
    assert abs(val["air.temperature"] + 12.25) <= 0.01
    assert abs(val["air.humidity"] - 63.0) <= 0.01
    assert abs(val["shed.temperature"] - 30.0) <= 0.01
    assert abs(val["shed.humidity"] - 2.0) <= 0.01
    assert val["water.temperature"] == 25.0625
    assert val["water2.temperature"] == -10.125   # two DS18B20s on one bus, by ROM
    assert val["porch.temperature"] == -10.1 and val["porch.humidity"] == 65.2
    assert abs(val["battery.voltage"] - 3.8) < 0.001   # 1.9 V through a 2:1 divider
    assert val["chip.temperature"] == 47.5
    assert len(r["sim.temperature"]) == 1 and len(r["sim.pressure"]) == 1
    units = {k: v[0][1] for k, v in r.items()}
    assert units["env.pressure"] == "Pa" and units["env.humidity"] == "%RH"
    assert units["water.temperature"] == "C" and units["battery.voltage"] == "V"
    assert all(v[0][2] is None for v in r.values()), r
    assert logs == []


def test_unfixed_values_are_seeded_and_deterministic(tmp_path):
    a, _ = sample(tmp_path, {"seed": 11}, rounds=3)
    b, _ = sample(tmp_path, {"seed": 11}, rounds=3)
    c, _ = sample(tmp_path, {"seed": 12}, rounds=3)
    assert a == b
    assert a["env.temperature"] != c["env.temperature"]
    assert all(15 < v[0] < 27 for v in a["env.temperature"])


FAULTS = [
    # (knobs, sensor, words the error must contain)
    ({"sensors": {"env": {"fault": "absent"}}}, "env", "no answer (errno 19)"),
    ({"sensors": {"env": {"fault": "stuck"}}}, "env", "bus stuck"),
    ({"sensors": {"air": {"fault": "absent"}}}, "air", "no answer"),
    ({"sensors": {"air": {"fault": "bad_crc"}}}, "air", "CRCError"),
    ({"sensors": {"shed": {"fault": "bad_crc"}}}, "shed", "crc mismatch"),
    ({"sensors": {"water": {"fault": "absent"}}}, "water", "no device answered"),
    ({"sensors": {"water": {"fault": "bad_crc"}}}, "water", "scratchpad crc"),
    ({"sensors": {"water": {"fault": "stuck"}}}, "water", "bus stuck"),
    ({"sensors": {"porch": {"fault": "absent"}}}, "porch", "no answer"),
    ({"sensors": {"porch": {"fault": "bad_crc"}}}, "porch", "checksum"),
    ({"stuck_bus": ["i2c0"]}, "env", "bus stuck"),
    ({"stuck_bus": ["i2c0"]}, "air", "bus stuck"),
    ({"stuck_bus": ["ow0"]}, "water2", "bus stuck"),
]


@pytest.mark.parametrize("knobs,sensor,words", FAULTS,
                         ids=["%s-%s" % (f[1], json.dumps(f[0])[:40]) for f in FAULTS])
def test_fault_knob_gives_missing_reading_and_log_line(tmp_path, knobs, sensor, words):
    r, logs = sample(tmp_path, knobs, rounds=2)
    mine = {k: v for k, v in r.items() if k.startswith(sensor + ".")}
    assert mine
    for name, vals in mine.items():
        assert len(vals) == 2  # marked missing every round: never skipped, never invented
        for value, unit, err in vals:
            assert value is None and words in err, (name, vals)
    assert len([l for l in logs if l.startswith("sampling: %s missing" % sensor)]) == 1, logs
    others = [v for k, v in r.items() if not k.startswith(sensor + ".")
              and not k.startswith(("env.", "air.", "shed.", "water"))]
    assert others and all(v[0][2] is None for v in others)  # the rest keeps sampling


def test_fault_from_env_var_and_recovery_at_run_time(tmp_path):
    code = SAMPLE.replace("for i in range(ROUNDS):\n    s.tick(i * 5000, emit)\n", """
s.tick(0, emit)
with open("vboard.json", "w") as f:
    f.write('{"sensors": {"air": {"fault": "absent"}, "pad": "' + 'x' * 40 + '"}}')
s.tick(5000, emit)
with open("vboard.json", "w") as f:
    f.write('{}')
s.tick(10000, emit)
""")
    r = run_board(tmp_path, code, knobs={}, env={
        "FIELDLINK_VBOARD": json.dumps({"sensors": {"env": {"fault": "absent"}}})})
    assert r.returncode == 0, r.stdout + r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("READINGS ")][0]
    got = [x for x in json.loads(line[9:]) if x[0] in ("air.temperature", "env.temperature")]
    air = [x[1] is not None for x in got if x[0] == "air.temperature"]
    env = [x[1] is not None for x in got if x[0] == "env.temperature"]
    assert air == [True, False, True]
    assert env == [False, False, False]
    assert "air reading again" in r.stdout


def test_same_size_knob_rewrite_within_a_second_is_seen(tmp_path):
    # The knobs were cached by (size, mtime); mtime has 1 s resolution on the unix port, so
    # moving a fault from one sensor to another (same length) was not seen until later.
    code = SAMPLE.replace("for i in range(ROUNDS):\n    s.tick(i * 5000, emit)\n", """
for i, who in enumerate(("env", "air", "env")):
    with open("vboard.json", "w") as f:
        f.write('{"sensors": {"%s": {"fault": "absent"}}}' % who)
    s.tick(i * 5000, emit)
""")
    r = run_board(tmp_path, code, knobs={})
    assert r.returncode == 0, r.stdout + r.stderr
    line = [l for l in r.stdout.splitlines() if l.startswith("READINGS ")][0]
    got = json.loads(line[9:])
    ok = {n: [x[1] is not None for x in got if x[0] == n]
          for n in ("env.temperature", "air.temperature")}
    assert ok == {"env.temperature": [False, True, False],
                  "air.temperature": [True, False, True]}, ok


def test_sampler_run_loop_on_the_virtual_board(tmp_path):
    code = """
import asyncio
from fieldlink import board, sampling
b = board.load("board.json")
s = sampling.Sampler(b.build_sensors(), {"*": {"interval_s": 0.05}})
got = []
def emit(name, value, unit, err):
    got.append(name)
async def main():
    t = asyncio.create_task(s.run(emit))
    for _ in range(400):
        if got.count("water.temperature") >= 2:
            break
        await asyncio.sleep_ms(10)
    t.cancel()
asyncio.run(main())
print("COUNT", got.count("env.pressure"), got.count("water.temperature"))
"""
    r = run_board(tmp_path, code, knobs={"seed": 2}, sensors=BOARD["sensors"])
    assert r.returncode == 0, r.stdout + r.stderr
    counts = [l for l in r.stdout.splitlines() if l.startswith("COUNT")][0].split()
    assert int(counts[1]) >= 2 and int(counts[2]) >= 2


def test_i2c_scan_and_missing_address(tmp_path):
    code = """
import machine
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
print("SCAN", i2c.scan())
try:
    i2c.readfrom(0x50, 1)
except OSError as e:
    print("ERR", e.args[0])
"""
    r = run_board(tmp_path, code, knobs={"sensors": {"air": {"fault": "absent"}}})
    assert "SCAN [69, 118]" in r.stdout and "ERR 19" in r.stdout, r.stdout + r.stderr


def test_onewire_scan_finds_both_roms(tmp_path):
    code = """
import machine, onewire, binascii
ow = onewire.OneWire(machine.Pin(4))
print("ROMS", sorted(binascii.hexlify(r).decode() for r in ow.scan()))
"""
    r = run_board(tmp_path, code, knobs={})
    assert "28ff4c6a711603eb" in r.stdout and EXTRA[1]["rom"] in r.stdout, r.stdout + r.stderr


@pytest.mark.parametrize("call", ["machine.reset()", "machine.soft_reset()"])
def test_reset_exits_75(tmp_path, call):
    r = run_board(tmp_path, "import machine\nprint('before')\n" + call + "\nprint('after')")
    assert r.returncode == 75 and "before" in r.stdout and "after" not in r.stdout


def test_deepsleep_exits_77_saying_how_long(tmp_path):
    # the sim host starts the board again that much later (test_vboard_deepsleep.py)
    r = run_board(tmp_path, "import machine\nprint('before')\nmachine.deepsleep(10)\n"
                            "print('after')")
    assert r.returncode == 77 and "before" in r.stdout and "after" not in r.stdout
    assert "vboard: deepsleep 10 ms" in r.stdout


def test_reset_cause_from_env(tmp_path):
    code = "import machine\nprint('CAUSE', machine.reset_cause(), machine.WDT_RESET)"
    r = run_board(tmp_path, code)
    assert "CAUSE 1 3" in r.stdout
    r = run_board(tmp_path, code, env={"FIELDLINK_VBOARD_RESET_CAUSE": "WDT_RESET"})
    assert "CAUSE 3 3" in r.stdout


def test_unique_id_stable_per_flash_dir_and_knob(tmp_path):
    code = "import machine, binascii\nprint('UID', binascii.hexlify(machine.unique_id()).decode())"
    a = run_board(tmp_path, code).stdout
    assert a == run_board(tmp_path, code).stdout and "UID 240ac4" in a
    (tmp_path / "b").mkdir()
    assert run_board(tmp_path / "b", code).stdout != a
    assert "UID 0102030405aa" in run_board(tmp_path, code, knobs={"unique_id": "0102030405aa"}).stdout


def test_adc_and_chip_temperature(tmp_path):
    code = """
import machine, esp32
adc = machine.ADC(machine.Pin(34), atten=machine.ADC.ATTN_11DB)
print("ADC", adc.read_uv(), adc.read_u16(), adc.read())
print("CHIP", esp32.mcu_temperature(), esp32.raw_temperature())
"""
    r = run_board(tmp_path, code, knobs={"sensors": {"battery": {"voltage": 1.55}},
                                         "chip_temp_c": 50})
    assert "ADC 1550000 32767 2047" in r.stdout and "CHIP 50.0 122" in r.stdout, r.stdout + r.stderr


def test_wdt_fires_when_not_fed_and_not_while_fed(tmp_path):
    fed = """
import machine, time
w = machine.WDT(timeout=300)
for i in range(10):
    time.sleep_ms(100)
    w.feed()
print("SURVIVED")
"""
    r = run_board(tmp_path, fed)
    assert "SURVIVED" in r.stdout and r.returncode == 0, r.stdout + r.stderr
    starved = """
import machine, time
w = machine.WDT(timeout=200)
print("ARMED")
while True:
    time.sleep_ms(50)
"""
    r = run_board(tmp_path, starved, timeout=30)
    assert "WDT timeout" in r.stdout
    assert r.returncode == -signal.SIGTERM


def test_machine_loads_its_pin_and_bus_models_on_first_use(tmp_path):
    # the simulated-sensor board never uses Pin/I2C/ADC: their models must not cost it heap
    code = """
import sys, gc
gc.collect(); a0 = gc.mem_alloc()
import machine
gc.collect(); a1 = gc.mem_alloc()
print("BEFORE", "simdev.machine_io" in sys.modules, "simdev" in sys.modules)
p = machine.Pin(4, machine.Pin.OUT)
gc.collect(); a2 = gc.mem_alloc()
print("AFTER", "simdev.machine_io" in sys.modules, machine.Pin is type(p), repr(p))
print("ADC", machine.ADC(machine.Pin(34)).read_u16() >= 0, hasattr(machine, "Nope"))
print("HEAP", a1 - a0, a2 - a1)
"""
    r = run_board(tmp_path, code)
    out = r.stdout
    assert "BEFORE False False" in out and "AFTER True True Pin(4)" in out, out + r.stderr
    assert "ADC True False" in out, out
    lazy, io = [int(x) for x in out.split("HEAP ")[1].split()]
    assert io > lazy, (lazy, io)   # the models are the bigger part, paid only when used


def test_i2c_loads_only_the_models_of_devices_on_its_bus(tmp_path):
    # a board with one SHT4x: the BME280 model and the ADC are never loaded
    code = """
import sys, machine
i2c = machine.I2C(0, scl=machine.Pin(22), sda=machine.Pin(21))
print("SCAN", i2c.scan())
print("LOADED", "simdev.sht3x" in sys.modules, "simdev.bme280" in sys.modules,
      "simdev.adc" in sys.modules)
"""
    sensors = [{"name": "shed", "driver": "sht4x", "bus": "i2c0", "address": 69}]
    r = run_board(tmp_path, code, knobs={}, sensors=sensors)
    assert "SCAN [69]" in r.stdout and "LOADED True False False" in r.stdout, r.stdout + r.stderr
