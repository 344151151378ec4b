"""Control's shell (docs/outputs.md): the board's output drivers set from the pure core
(control.py), the last applied records kept in a small flash file of their own, readings fed
to the rules, the failsafe's timer, and the `reported` messages the link sends. start.py builds
it only for a board with outputs: a board without loads none of this."""
import asyncio
import json
import os

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

from fieldlink import log
from fieldlink import control
from fieldlink.control import Core

STATE_FILE = "outputs.json"  # in the flash's root, apart from the outbox's directory
_TICK_S = 0.2  # how often the failsafes are looked at and changes reported
_log = log.Logger("control")


def read_state(path):
    """The records saved last, or None. A power cut between the remove and the rename of a
    filesystem whose rename does not replace (FAT) leaves only the whole .tmp: taken."""
    for p in (path, path + ".tmp"):
        try:
            with open(p) as f:
                return json.load(f)
        except (OSError, ValueError):
            pass
    return None


def write_state(path, data):
    """Whole to a temporary name, then renamed into place: old or new after a power cut."""
    with open(path + ".tmp", "w") as f:
        json.dump(data, f)
    try:
        os.rename(path + ".tmp", path)
    except OSError:  # filesystems where rename does not replace (FAT)
        os.remove(path)
        os.rename(path + ".tmp", path)


class Control:
    """built: [(control.Output, driver, restore mode)] from board.outputs(); clock: uptime."""

    def __init__(self, built, failsafe_s, clock, sampler=None, sup=None, path=STATE_FILE):
        self.clock = clock
        self.sampler = sampler
        self.sup = sup
        self.path = path
        now = clock.uptime_ms()
        self.core = Core([b[0] for b in built], failsafe_s, now)
        self._drv = [b[1] for b in built]
        self._set = [None] * len(built)  # what each driver was last set to
        self._emit = None  # type: Any  # the app's emit (run)
        modes = {}
        for b in built:
            modes[b[0].name] = b[2]
        self.core.restore(read_state(path), modes, now)
        self._apply()

    def _apply(self):
        core = self.core
        for i, o in enumerate(core.outputs):
            s = self._set[i]
            if s is None or s != o.v or type(s) is not type(o.v):
                try:
                    self._drv[i].set(o.v)
                except Exception as e:  # a driver's error must not stop the others
                    _log.error("output %s: %s", o.name, e)
                self._set[i] = o.v
                _log.info("output %s = %s (%s, ver %d)", o.name, o.v, o.why, o.ver)
        if core.save_due:
            core.save_due = False
            try:
                write_state(self.path, core.saved())
            except OSError as e:  # flash full or failing: the outputs are set all the same
                _log.warn("outputs: cannot save %s: %s", self.path, e)

    # ---- the app's side ----

    async def run(self, emit):
        """The app's sampler: runs the real one, whose readings reach the rules before
        `emit`, and the failsafes' timer beside it."""
        self._emit = emit
        asyncio.create_task(self._timer())
        await self.sampler.run(self.emit)

    def emit(self, name, value, unit, err):
        core = self.core
        if name in core.watch and core.reading(name, value, self.clock.uptime_ms()):
            self._apply()
        self._emit(name, value, unit, err)

    async def _timer(self):
        """The failsafes' time, with the link's state from the supervisor (down_since; in
        HELLO the welcome may be here already: decided after it), and the reports of what
        changed meanwhile (rules, failsafe) while it streams."""
        from fieldlink import link
        sup = self.sup
        while True:
            await asyncio.sleep(_TICK_S)
            core = self.core
            st = sup.state
            try:
                if st != link.S_HELLO and core.tick(self.clock.uptime_ms(), sup.down_since):
                    self._apply()
                if core.dirty and st == link.S_STREAM:
                    r = core.report()
                    if r is not None:
                        await sup._send(r)
            except Exception as e:
                # this task must not end (no failsafe after it). A failed send: the link's
                # own tasks see the dead link, and after the next welcome the whole state is
                # reported anyway
                _log.warn("control: %s: %s", type(e).__name__, e)

    # ---- the link's side (supervisor.py) ----

    def welcome(self):
        """The link is up: out of the link failsafe; the whole state, to send first."""
        self.core.tick(self.clock.uptime_ms(), None)
        self._apply()
        return self.core.report(True)

    async def desired(self, sup, text):
        """A `desired` message applied (ProtoError if it is malformed: the link closes with
        its code, as for any message); what it changed or refused reported at once."""
        rec = control._rec()  # (imported for this message: dropped again)
        out, full = rec.parse_desired(text)
        rec.desired(self.core, out, full, self.clock.uptime_ms())
        self._apply()
        r = self.core.report(full)
        if r is not None:
            await sup._send(r)

