# dual: runs on CPython and on MicroPython
"""Config schema: defaults, malformed configs (each error names the key), secrets hidden."""
import json

from dualsupport import load_vectors, raises

from fieldlink import config

V = load_vectors("config_cases")


def _make(case):
    raw = dict(V["base"])
    for k in case.get("del", ()):
        del raw[k]
    raw.update(case.get("patch", {}))
    return raw


def test_minimal_config_gets_defaults():
    c = config.load(dict(V["base"]))
    assert c.device_id == "dev-1"
    assert c.ping_interval_s == 20 and c.ping_timeout_s == 10
    assert c.backoff_base_s == 1 and c.backoff_max_s == 60
    assert c.window == 64 and c.batch_max == 20
    assert c.ca_file is None and c.sampling == {}
    for key in config.KEYS:
        assert hasattr(c, key), key


def test_each_malformed_config_names_its_key():
    for case in V["bad"]:
        e = raises(config.ConfigError, config.load, _make(case))
        msg = str(e)
        assert msg.startswith("config.%s:" % case["key"]), (msg, case)
        assert case["msg"] in msg, (msg, case)
        assert e.key == case["key"]


def test_secrets_never_in_errors_or_repr():
    for case in V["secret_bad"]:
        raw = _make(case)
        e = raises(config.ConfigError, config.load, raw)
        assert e.key == case["key"]
        assert "<secret>" in str(e)
    raw = dict(V["base"])
    raw["wifi_password"] = "hunter2-wifi"
    c = config.load(raw)
    text = repr(c) + json.dumps(c.as_dict())
    assert "hunter2-wifi" not in text and "s3cret-token" not in text
    assert "dev-1" in text
    assert c.as_dict(redact=False)["token"] == "s3cret-token"


def test_not_an_object():
    e = raises(config.ConfigError, config.load, [1, 2])
    assert "JSON object" in str(e)


def test_comment_keys_allowed():
    raw = dict(V["base"])
    raw["_comment"] = "fill in your wifi"
    assert config.load(raw).url.startswith("ws://")


def test_load_file_errors_name_the_file(tmp=None):
    import binascii
    import os
    # a fresh name each run: id() repeats between runs and interpreters (two xdist workers)
    path = "/tmp/fieldlink-test-config-%s.json" % binascii.hexlify(os.urandom(6)).decode()
    try:
        with open(path, "w") as f:
            f.write("{not json")
        e = raises(config.ConfigError, config.load_file, path)
        assert "valid JSON" in str(e)
        with open(path, "w") as f:
            f.write(json.dumps(V["base"]))
        assert config.load_file(path).token == "s3cret-token"
    finally:
        os.remove(path)
    e = raises(config.ConfigError, config.load_file, path + ".missing")
    assert "readable" in str(e)


def test_example_file_is_valid():
    # the committed example must load as it is (sampling may be checked by the sampler)
    here = __file__.rsplit("/", 1)[0]
    c = config.load_file(here + "/../../firmware/config.example.json")
    assert c.device_id and c.url
