# dual: runs on CPython and on MicroPython
"""Config errors never show a secret, even when the key holding it is misspelt or the file's
top level is not an object (the error is printed to the log at boot)."""
from fieldlink import config

BASE = {"url": "ws://127.0.0.1:1/ws", "device_id": "dev-1", "token": "tok-SECRET-1"}


def _err(raw):
    try:
        config.load(raw)
    except config.ConfigError as e:
        return str(e)
    raise AssertionError("no ConfigError")


def test_misspelt_secret_key_does_not_show_its_value():
    raw = dict(BASE)
    raw["wifi_pasword"] = "hunter2-SECRET"
    msg = _err(raw)
    assert "wifi_pasword" in msg, msg
    assert "SECRET" not in msg, msg


def test_non_object_config_does_not_show_its_contents():
    msg = _err([{"token": "SECRET-abc"}])
    assert "(top)" in msg and "SECRET" not in msg, msg
