"""app.main on Ctrl-C: the outbox is flushed with Ctrl-C off (micropython.kbd_intr(-1)), so a
second Ctrl-C (someone at the REPL pressing it again) cannot cut the flush half-way; Ctrl-C is
on again after, whether the flush worked or failed. CPython, with a stand-in `micropython`
module that records the calls (the real one's functions cannot be replaced)."""
import sys
import types

import pytest

from fieldlink import app


class Outbox:
    def __init__(self, kbd, fail=False):
        self.kbd = kbd
        self.fail = fail
        self.flushed_with = None

    def flush(self):
        self.flushed_with = self.kbd[-1] if self.kbd else None
        if self.fail:
            raise OSError(28)

    def held(self):
        return 5


@pytest.fixture
def kbd(monkeypatch):
    calls = []
    mod = types.ModuleType("micropython")
    mod.kbd_intr = calls.append
    monkeypatch.setitem(sys.modules, "micropython", mod)
    return calls


@pytest.mark.parametrize("fail", [False, True])
def test_the_flush_on_ctrl_c_runs_with_ctrl_c_off(kbd, monkeypatch, fail):
    ob = Outbox(kbd, fail)

    class Booted:   # what start.boot returns: the app, whose run() is stopped by Ctrl-C
        outbox = ob

        async def run(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(app, "_boot", lambda path: Booted())
    with pytest.raises(KeyboardInterrupt):   # main.py lets it through to the REPL
        app.main()
    assert ob.flushed_with == -1
    assert kbd == [-1, 3]
