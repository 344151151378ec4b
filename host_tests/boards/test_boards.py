"""Board files: every one passes its chip's pin rules and the firmware's own check; bad
ones are refused with a message naming the key, the pin and the rule."""
import copy
import json
import re

import pytest

from fieldlink import board as fw_board
from fieldlink_tools import boards, cli, paths

NAMES = boards.list_boards()


def test_the_four_boards_exist():
    assert {"esp32_devkitc", "esp32s3_devkitc1", "esp32c3_supermini", "virtual"} <= set(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_every_board_file_is_valid(name):
    data = boards.load_board(name)
    assert data["name"] == name
    assert not [p for p in boards.validate(data) if p.level == "error"]
    b = fw_board.load(str(paths.BOARDS / name / "board.json"))  # the firmware's check too
    assert b.name == name and b.chip == data["chip"]
    assert data["micropython"]["version"] == "1.29.0"


def test_strapping_pin_is_a_warning_not_an_error():
    problems = boards.validate(boards.load_board("esp32_devkitc"))
    assert [str(p) for p in problems] == [
        "warning: led.pin: GPIO 2 is a strapping pin (esp32: 0, 2, 5, 12, 15): what is "
        "wired to it must not change the level at reset"]


def _board(name="esp32_devkitc"):
    return copy.deepcopy(boards.load_board(name))


def _errors(d):
    return [str(p) for p in boards.validate(d) if p.level == "error"]


def _set(d, dotted, value):
    keys = dotted.split(".")
    cur = d
    for k in keys[:-1]:
        cur = cur[int(k)] if isinstance(cur, list) else cur[k]
    cur[keys[-1]] = value


BAD = [
    # (board, key, value, expected substring of an error)
    ("esp32_devkitc", "buses.i2c0.scl", 6, "buses.i2c0.scl: GPIO 6 is connected to the SPI flash (ESP32 GPIO 6-11)"),
    ("esp32_devkitc", "buses.i2c0.sda", 11, "GPIO 11 is connected to the SPI flash"),
    ("esp32_devkitc", "buses.ow0.pin", 35, "buses.ow0.pin: GPIO 35 is input-only"),
    ("esp32_devkitc", "led.pin", 39, "led.pin: GPIO 39 is input-only"),
    ("esp32_devkitc", "led.pin", 24, "led.pin: GPIO 24 does not exist on the esp32"),
    ("esp32_devkitc", "sensors.2.pin", 25, "sensors[2].pin: GPIO 25 is on ADC2"),
    ("esp32_devkitc", "sensors.2.pin", 23, "GPIO 23 has no ADC channel"),
    ("esp32_devkitc", "buses.ow0.pin", 21, "buses.ow0.pin: GPIO 21 is already used by buses.i2c0.sda"),
    ("esp32_devkitc", "sensors.0.address", 0x44, "sensors[0].address: a bme280 answers at 118 (0x76) or 119 (0x77)"),
    ("esp32_devkitc", "sensors.0.driver", "bme680", "sensors[0].driver: unknown driver 'bme680'"),
    ("esp32_devkitc", "sensors.0.bus", "ow0", "sensors[0].bus: bme280 needs a i2c bus"),
    ("esp32_devkitc", "sensors.1.rom", "28ff4c6a71160300", "sensors[1].rom: expected 16 hex digits with a valid CRC"),
    ("esp32_devkitc", "sensors.1.name", "env", "sensors[1].name: 'env' is used twice"),
    ("esp32_devkitc", "micropython.flash_offset", "0x0", "micropython.flash_offset: esp32 images are written at 0x1000"),
    ("esp32_devkitc", "chip", "esp8266", "chip: unknown chip 'esp8266'"),
    ("esp32_devkitc", "buses.i2c0.freq", 5000000, "buses.i2c0.freq: expected 1000..1000000 Hz"),
    # reading names "<sensor>.<quantity>" over 64 chars / units over 16 were refused by the
    # collector on every resend
    ("esp32_devkitc", "sensors.0.name", "n" * 33, "sensors[0].name: expected a name of 1-32"),
    ("esp32_devkitc", "sensors.2.unit", "volts-through-a-divider", "sensors[2].unit: expected a unit of 1-16 chars"),
    ("esp32_devkitc", "sensors.2.quantity", "q" * 32, "sensors[2].quantity: expected 1-31"),
    ("esp32s3_devkitc1", "buses.i2c0.scl", 30, "GPIO 30 is connected to the SPI flash/PSRAM (ESP32-S3 GPIO 26-32)"),
    ("esp32s3_devkitc1", "buses.ow0.pin", 35, "GPIO 35 is used by the octal PSRAM/flash on this module"),
    ("esp32s3_devkitc1", "buses.ow0.pin", 22, "GPIO 22 does not exist on the esp32s3"),
    ("esp32c3_supermini", "buses.i2c0.scl", 14, "GPIO 14 is connected to the SPI flash (ESP32-C3 GPIO 12-17)"),
    ("esp32c3_supermini", "buses.i2c0.id", 1, "buses.i2c0.id: the esp32c3 has I2C ids (0,)"),
    ("esp32c3_supermini", "sensors.2.pin", 5, "GPIO 5 is on ADC2, which cannot be read while Wi-Fi is on"),
    ("esp32c3_supermini", "buses.ow0.pin", 22, "GPIO 22 does not exist on the esp32c3"),
    # outputs (docs/outputs.md): which pins can drive one, the PWM range, the values
    ("esp32_devkitc", "outputs.0.pin", 34, "outputs[0].pin: GPIO 34 is input-only"),
    ("esp32_devkitc", "outputs.1.pin", 39, "outputs[1].pin: GPIO 39 is input-only"),
    ("esp32_devkitc", "outputs.0.pin", 6, "outputs[0].pin: GPIO 6 is connected to the SPI flash (ESP32 GPIO 6-11)"),
    ("esp32_devkitc", "outputs.2.pin", 11, "outputs[2].pin: GPIO 11 is connected to the SPI flash"),
    ("esp32_devkitc", "outputs.0.pin", 12, "outputs[0].pin: GPIO 12 cannot drive an output: it is a strapping pin that selects the flash voltage at boot"),
    ("esp32_devkitc", "outputs.1.pin", 26, "outputs[1].pin: GPIO 26 is already used by outputs[0].pin"),
    ("esp32_devkitc", "outputs.0.pin", 21, "outputs[0].pin: GPIO 21 is already used by buses.i2c0.sda"),
    ("esp32_devkitc", "outputs.1.freq", 50000000, "outputs[1].freq: the esp32's PWM (LEDC) runs at 1..40000000 Hz"),
    ("esp32_devkitc", "outputs.1.freq", 0, "outputs[1].freq: the esp32's PWM (LEDC) runs at 1..40000000 Hz"),
    ("esp32s3_devkitc1", "outputs.1.freq", 2, "outputs[1].freq: the esp32s3's PWM (LEDC) runs at 5..40000000 Hz"),
    ("esp32c3_supermini", "outputs.1.freq", 1, "outputs[1].freq: the esp32c3's PWM (LEDC) runs at 5..40000000 Hz"),
    ("esp32s3_devkitc1", "outputs.0.pin", 45, "outputs[0].pin: GPIO 45 cannot drive an output: it is a strapping pin that selects the flash voltage"),
    ("esp32s3_devkitc1", "outputs.0.pin", 30, "GPIO 30 is connected to the SPI flash/PSRAM"),
    ("esp32c3_supermini", "outputs.0.pin", 15, "GPIO 15 is connected to the SPI flash (ESP32-C3 GPIO 12-17)"),
    ("esp32_devkitc", "outputs.0.safe", 2, "outputs[0].safe: a digital output's safe value is 0 or 1"),
    ("esp32_devkitc", "outputs.1.safe", 1.5, "outputs[1].safe: a PWM output's safe value is a duty 0.0-1.0"),
    ("esp32_devkitc", "outputs.2.safe", 200, "outputs[2].safe: a servo's safe value is an angle 0-180"),
    ("esp32_devkitc", "outputs.2.max_us", 30000, "outputs[2].max_us: a 30000 us pulse does not fit a 50 Hz period"),
    ("esp32_devkitc", "outputs.2.min_us", 2600, "outputs[2].min_us: expected 0 < min_us < max_us"),
    ("esp32_devkitc", "outputs.0.type", "relay", "outputs[0].type: expected digital, pwm or servo"),
    ("esp32_devkitc", "outputs.1.name", "fan", "outputs[1].name: 'fan' is used twice"),
    ("esp32_devkitc", "outputs.1.name", "a b", "outputs[1].name: expected 1-32 of A-Z a-z 0-9 _ . -"),
    ("esp32_devkitc", "outputs.0.restore", "maybe", "outputs[0].restore: expected safe or last"),
]


@pytest.mark.parametrize("name,key,value,expect", BAD, ids=[b[1] + "=" + str(b[2]) for b in BAD])
def test_bad_board_is_refused_naming_pin_and_rule(name, key, value, expect, tmp_path):
    d = _board(name)
    _set(d, key, value)
    errs = _errors(d)
    assert any(expect in e for e in errs), errs
    p = tmp_path / "board.json"
    p.write_text(json.dumps(d))
    with pytest.raises(boards.BoardError, match=re.escape(expect)):
        boards.load_board(str(p))
    assert cli.main(["boards", "validate", str(p)]) == 1


def test_strapping_and_console_warnings_on_s3_and_c3():
    d = _board("esp32s3_devkitc1")
    d["buses"]["ow0"]["pin"] = 46
    assert any("warning: buses.ow0.pin: GPIO 46 is a strapping pin" in str(p)
               for p in boards.validate(d))
    assert not _errors(d)
    d = _board("esp32c3_supermini")
    d["buses"]["ow0"]["pin"] = 20
    assert any("GPIO 20 carries the USB/UART console" in str(p) for p in boards.validate(d))
    d["buses"]["ow0"]["pin"] = 11
    assert any("VDD_SPI" in str(p) for p in boards.validate(d))


def test_s3_octal_pins_only_warn_without_octal_psram():
    d = _board("esp32s3_devkitc1")
    d.pop("psram")
    d["buses"]["ow0"]["pin"] = 35
    assert not _errors(d)
    assert any("octal PSRAM/flash on some" in str(p) for p in boards.validate(d))


def test_input_only_pin_is_fine_for_analog():
    d = _board()
    d["sensors"][2]["pin"] = 36
    assert not _errors(d)


def test_missing_sections_are_named():
    errs = _errors({"name": "x", "title": "x", "chip": "esp32"})
    assert any(e.startswith("error: micropython: required") for e in errs)
    assert any(e.startswith("error: buses: required") for e in errs)
    assert any(e.startswith("error: sensors: required") for e in errs)


def test_load_board_unknown_name_is_a_clear_error():
    with pytest.raises(boards.BoardError, match=r"unknown board 'nope' \(known: esp32_devkitc"):
        boards.load_board("nope")


def test_load_board_by_folder_and_bad_json(tmp_path):
    assert boards.load_board(paths.BOARDS / "virtual")["chip"] == "unix"
    p = tmp_path / "board.json"
    p.write_text("{not json")
    with pytest.raises(boards.BoardError, match="not valid JSON"):
        boards.load_board(str(p))


def test_cli_validate_names_file_line_and_column_of_bad_json(tmp_path, capsys):
    p = tmp_path / "bad.json"
    p.write_text('{"name": "x",\n  "chip": "esp32"\n  "buses": {}}\n')  # a comma missing
    assert cli.main(["boards", "validate", str(p)]) == 1
    err = capsys.readouterr().err
    assert "%s: not valid JSON: line 3, column 3" % p in err, err
    assert "Traceback" not in err
    p.write_bytes(b"\xff\xfe{}")
    assert cli.main(["boards", "validate", str(p)]) == 1
    assert "%s: not valid JSON: not UTF-8" % p in capsys.readouterr().err
    p.write_text("{not json")
    with pytest.raises(boards.BoardError, match=r"bad.json: not valid JSON: line 1, column 2"):
        boards.load_board(str(p))


def test_cli_list_and_validate_all(capsys):
    assert cli.main(["boards", "list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in NAMES)
    assert cli.main(["boards", "validate"]) == 0
    assert "refused" not in capsys.readouterr().out
    assert cli.main(["boards", "validate", "nope"]) == 1


@pytest.mark.parametrize("mutate,expect", [
    (lambda d: d.pop("buses"), "board.json: buses: required"),
    (lambda d: d["buses"]["i2c0"].update(scl="22"), "board.json: buses.i2c0.scl: expected a GPIO number, got '22'"),
    (lambda d: d["buses"]["ow0"].update(type="spi"), "board.json: buses.ow0.type: expected i2c or onewire"),
    (lambda d: d["sensors"][0].update(bus="i2c9"), "board.json: sensors[0].bus: 'i2c9' is not a i2c bus"),
    (lambda d: d["sensors"][0].update(driver="x"), "board.json: sensors[0].driver: unknown 'x'"),
    (lambda d: d["sensors"][1].update(name="env"), "board.json: sensors[1].name: 'env'"),
    (lambda d: d["sensors"][0].pop("address"), "board.json: sensors[0].address: required"),
    (lambda d: d["sensors"][0].update(name="n" * 33), "board.json: sensors[0].name: 'nnn"),
    (lambda d: d["sensors"][2].update(unit="u" * 17), "board.json: sensors[2].unit: expected 1-16 chars"),
    (lambda d: d["sensors"][2].update(quantity="a.b"), "board.json: sensors[2].quantity: expected 1-31 chars without dots"),
])
def test_firmware_board_check_names_the_key(mutate, expect):
    d = _board()
    mutate(d)
    with pytest.raises(ValueError, match=re.escape(expect)):
        fw_board.load(d)


def test_several_ds18b20_on_one_bus_need_their_roms():
    d = _board()
    d["sensors"].append({"name": "water2", "driver": "ds18b20", "bus": "ow0",
                         "rom": "28ff4c6a711603eb"})
    assert _errors(d) == ["error: sensors[1].rom: required: 2 DS18B20s share ow0, so each "
                          "needs its ROM code (OneWire.scan() on the board lists them)"]
    d["sensors"][1]["rom"] = "021cb801000000a2"
    assert not _errors(d)


def test_longest_names_fit_what_the_collector_stores():
    from fieldlink_tools.collector import messages
    d = _board()
    d["sensors"][2].update(name="n" * 32, quantity="q" * 31, unit="u" * 16)
    assert not _errors(d)
    fw_board.load(d)
    n = "%s.%s" % (d["sensors"][2]["name"], d["sensors"][2]["quantity"])
    messages.check_reading({"q": 1, "ts": None, "up": 0, "n": n, "v": 1.0, "u": "u" * 16})


def test_no_gpio_numbers_in_firmware():
    """Pins come from board.json only: no Pin(<number>) or scl=/sda=<number> in firmware/."""
    pat = re.compile(r"Pin\(\s*\d|\b(scl|sda|pin)\s*=\s*\d")
    hits = [str(p) for p in paths.FIRMWARE.rglob("*.py") if pat.search(p.read_text())]
    assert hits == []
