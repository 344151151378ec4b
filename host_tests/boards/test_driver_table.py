"""One driver table: firmware/fieldlink/board.py's DRIVERS. `fieldlink boards validate` reads
it rather than keeping its own copy, so the host's checks and the board's build agree on every
driver and on what each is attached to."""
import importlib

from fieldlink import board as fw_board
from fieldlink_tools import boards

# what the host's validate() knows how to check, by what a driver is attached to
KINDS = ("i2c", "onewire", "pin", "adc", None)


def test_the_tools_take_the_firmwares_table():
    assert boards.DRIVERS == {name: spec[2] for name, spec in fw_board.DRIVERS.items()}


def test_every_driver_is_attached_to_something_both_sides_check():
    for name, (mod, cls, kind) in fw_board.DRIVERS.items():
        assert kind in KINDS, (name, kind)
        if kind in fw_board.BUS_TYPES:
            assert kind in ("i2c", "onewire"), name
        if kind == "i2c":
            assert name in boards.ADDRESSES, name  # the host checks its I2C address
        m = importlib.import_module("fieldlink." + mod)
        assert isinstance(getattr(m, cls), type), (name, mod, cls)


def test_an_analog_input_needs_an_adc_pin_on_the_host_and_a_pin_on_the_board():
    d = {"name": "b", "title": "b", "chip": "esp32",
         "micropython": {"version": "1.29.0", "image": "x.bin", "flash_offset": "0x1000",
                         "url": "https://example.invalid/x.bin"},
         "buses": {}, "sensors": [{"name": "bat", "driver": "analog", "pin": 34}]}
    assert not [p for p in boards.validate(d) if p.level == "error"]
    fw_board.check(d)
    d["sensors"][0]["pin"] = 23  # a GPIO without an ADC
    assert [p for p in boards.validate(d) if p.level == "error"]
    del d["sensors"][0]["pin"]
    assert [p for p in boards.validate(d) if p.level == "error"]
    try:
        fw_board.check(d)
    except ValueError as e:
        assert "sensors[0].pin" in str(e)
    else:
        raise AssertionError("the firmware took an analog input without a pin")
