# dual: runs on CPython and on MicroPython
"""Server commands (link/commands.py): each gets its reply; what only the link can do (send
health, reboot) is handed back to it, never done here; a bad argument is a failed reply."""
import json

from fieldlink.link import commands


class Sampler:
    def __init__(self):
        self.now = 0

    def set_interval(self, sensor, interval_s):
        if not isinstance(interval_s, (int, float)) or interval_s <= 0:
            raise ValueError("interval_s: expected a number > 0")
        return {"sensor": sensor, "interval_s": interval_s}

    def sample_now(self):
        self.now += 1


def run(cmd, args=None, sampler=None):
    reply, then = commands.run(("cmd", "c1", cmd, args or {}), sampler)
    return json.loads(reply), then


def test_set_interval_and_sample_now():
    s = Sampler()
    r, then = run("set_interval", {"sensor": "env", "interval_s": 5}, s)
    assert r == {"t": "reply", "id": "c1", "ok": True,
                 "result": {"sensor": "env", "interval_s": 5}} and then is None
    r, then = run("sample_now", sampler=s)
    assert r["ok"] and s.now == 1 and then is None


def test_health_and_reboot_are_left_to_the_link():
    for cmd in ("health", "reboot"):
        r, then = run(cmd, sampler=Sampler())
        assert r["ok"] and then == cmd


def test_bad_arguments_and_unknown_commands_fail_the_reply_only():
    r, then = run("set_interval", {"interval_s": -1}, Sampler())
    assert r["ok"] is False and "interval_s" in r["err"] and then is None
    r, then = run("set_interval", {"interval_s": 5}, None)
    assert r["ok"] is False and r["err"] == "no sampler"
    r, then = run("format_flash")
    assert r == {"t": "reply", "id": "c1", "ok": False, "err": "unknown command"}
    assert then is None
