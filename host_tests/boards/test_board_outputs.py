"""Outputs in board files (docs/outputs.md): strapping pins warned about with the reason,
the firmware's own check refusing a malformed entry, the board files' outputs. (Outputs the
validator refuses, naming the pin and the rule: test_boards.py's BAD.)"""
import copy
import re

import pytest

from fieldlink import board as fw_board
from fieldlink_tools import boards


def _board(name="esp32_devkitc"):
    return copy.deepcopy(boards.load_board(name))


def _problems(d, level):
    return [str(p) for p in boards.validate(d) if p.level == level]


def _set(d, i, **kw):
    d["outputs"][i].update(kw)
    return d


@pytest.mark.parametrize("name,pin,why", [
    ("esp32_devkitc", 0, "low at reset enters the serial bootloader"),
    ("esp32_devkitc", 15, "outputs a PWM signal at boot"),
    ("esp32_devkitc", 5, "outputs a PWM signal at boot"),
    ("esp32s3_devkitc1", 46, "must be low at reset to enter the bootloader"),
    ("esp32c3_supermini", 9, "low at reset enters the serial bootloader"),
])
def test_other_strapping_pins_are_warned_about_with_the_reason(name, pin, why):
    d = _set(_board(name), 0, pin=pin)
    assert not _problems(d, "error")
    warns = _problems(d, "warning")
    assert any(w.startswith("warning: outputs[0].pin: GPIO %d is a strapping pin: " % pin)
               and why in w for w in warns), warns


def test_very_fast_pwm_is_a_warning_about_resolution():
    d = _set(_board(), 1, freq=1000000)
    assert not _problems(d, "error")
    assert any("8 bits of duty resolution" in w for w in _problems(d, "warning"))


def test_every_board_names_outputs_and_the_virtual_one_a_fan_heater_and_led():
    for name in boards.list_boards():
        d = boards.load_board(name)
        assert d.get("outputs"), name
    v = {o["name"]: o for o in boards.load_board("virtual")["outputs"]}
    assert v["fan"]["type"] == "digital" and v["heater"]["type"] == "pwm"
    assert v["led"]["type"] == "digital" and v["led"]["active_low"] is True


FW_BAD = [
    ({"type": "relay"}, "outputs[0].type: expected digital, pwm or servo"),
    ({"name": "x y"}, "outputs[0].name"),
    ({"safe": 3}, "outputs[0].safe/rule: digital value must be 0 or 1"),
    ({"rule": {"n": "env.temperature", "above": 1, "below": 2, "when_above": 1,
               "when_below": 0}}, "outputs[0].safe/rule: rule needs numbers below <= above"),
    ({"pin": -1}, "outputs[0].pin: expected a GPIO number"),
    ({"active_low": 1}, "outputs[0].active_low"),
]


@pytest.mark.parametrize("fields,expect", FW_BAD, ids=[str(b[0]) for b in FW_BAD])
def test_the_firmware_refuses_a_malformed_output(fields, expect):
    d = _set(_board(), 0, **fields)
    with pytest.raises(ValueError, match=re.escape(expect)):
        fw_board.check(d)


def test_the_firmware_needs_a_safe_value():
    d = _board()
    del d["outputs"][0]["safe"]
    with pytest.raises(ValueError, match=re.escape("outputs[0].safe: required")):
        fw_board.check(d)
