"""Outputs in board files (docs/outputs.md): the validator knows which pins can drive an
output on each chip and the PWM frequency range, naming the pin and the rule; the firmware's
own check refuses a malformed entry; the board files' outputs are valid."""
import copy
import json
import re

import pytest

from fieldlink import board as fw_board
from fieldlink_tools import boards, cli


def _board(name="esp32_devkitc"):
    return copy.deepcopy(boards.load_board(name))


def _problems(d, level):
    return [str(p) for p in boards.validate(d) if p.level == level]


def _set(d, i, **kw):
    d["outputs"][i].update(kw)
    return d


BAD = [
    # (board, output index, fields, expected substring of an error)
    ("esp32_devkitc", 0, {"pin": 34}, "outputs[0].pin: GPIO 34 is input-only"),
    ("esp32_devkitc", 1, {"pin": 39}, "outputs[1].pin: GPIO 39 is input-only"),
    ("esp32_devkitc", 0, {"pin": 6}, "outputs[0].pin: GPIO 6 is connected to the SPI flash (ESP32 GPIO 6-11)"),
    ("esp32_devkitc", 2, {"pin": 11}, "outputs[2].pin: GPIO 11 is connected to the SPI flash"),
    ("esp32_devkitc", 0, {"pin": 12}, "outputs[0].pin: GPIO 12 cannot drive an output: it is a strapping pin that selects the flash voltage at boot"),
    ("esp32_devkitc", 1, {"pin": 26}, "outputs[1].pin: GPIO 26 is already used by outputs[0].pin"),
    ("esp32_devkitc", 0, {"pin": 21}, "outputs[0].pin: GPIO 21 is already used by buses.i2c0.sda"),
    ("esp32_devkitc", 1, {"freq": 50000000}, "outputs[1].freq: the esp32's PWM (LEDC) runs at 1..40000000 Hz"),
    ("esp32_devkitc", 1, {"freq": 0}, "outputs[1].freq: the esp32's PWM (LEDC) runs at 1..40000000 Hz"),
    ("esp32s3_devkitc1", 1, {"freq": 2}, "outputs[1].freq: the esp32s3's PWM (LEDC) runs at 5..40000000 Hz"),
    ("esp32c3_supermini", 1, {"freq": 1}, "outputs[1].freq: the esp32c3's PWM (LEDC) runs at 5..40000000 Hz"),
    ("esp32s3_devkitc1", 0, {"pin": 45}, "outputs[0].pin: GPIO 45 cannot drive an output: it is a strapping pin that selects the flash voltage"),
    ("esp32s3_devkitc1", 0, {"pin": 30}, "GPIO 30 is connected to the SPI flash/PSRAM"),
    ("esp32c3_supermini", 0, {"pin": 15}, "GPIO 15 is connected to the SPI flash (ESP32-C3 GPIO 12-17)"),
    ("esp32_devkitc", 0, {"safe": 2}, "outputs[0].safe: a digital output's safe value is 0 or 1"),
    ("esp32_devkitc", 1, {"safe": 1.5}, "outputs[1].safe: a PWM output's safe value is a duty 0.0-1.0"),
    ("esp32_devkitc", 2, {"safe": 200}, "outputs[2].safe: a servo's safe value is an angle 0-180"),
    ("esp32_devkitc", 2, {"max_us": 30000}, "outputs[2].max_us: a 30000 us pulse does not fit a 50 Hz period"),
    ("esp32_devkitc", 2, {"min_us": 2600}, "outputs[2].min_us: expected 0 < min_us < max_us"),
    ("esp32_devkitc", 0, {"type": "relay"}, "outputs[0].type: expected digital, pwm or servo"),
    ("esp32_devkitc", 1, {"name": "fan"}, "outputs[1].name: 'fan' is used twice"),
    ("esp32_devkitc", 1, {"name": "a b"}, "outputs[1].name: expected 1-32 of A-Z a-z 0-9 _ . -"),
    ("esp32_devkitc", 0, {"restore": "maybe"}, "outputs[0].restore: expected safe or last"),
]


@pytest.mark.parametrize("name,i,fields,expect", BAD,
                         ids=["%s-%d-%s" % (b[0], b[1], "-".join(b[2])) for b in BAD])
def test_bad_output_is_refused_naming_pin_and_rule(name, i, fields, expect, tmp_path):
    d = _set(_board(name), i, **fields)
    errs = _problems(d, "error")
    assert any(expect in e for e in errs), errs
    p = tmp_path / "board.json"
    p.write_text(json.dumps(d))
    with pytest.raises(boards.BoardError, match=re.escape(expect)):
        boards.load_board(str(p))
    assert cli.main(["boards", "validate", str(p)]) == 1


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
