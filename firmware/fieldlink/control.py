"""Control's pure core (docs/outputs.md, docs/protocol.md "Control"): per output, the desired
record last applied (its ver), the local rule, the failsafe, the value that follows from them,
and the `reported` message. No I/O, no clock: the shell (control_io.py) passes uptime in ms,
sets the hardware to each output's `v` and writes `saved()` to flash when `save_due`. Tested on
CPython and MicroPython alike. Loaded only on a board that has outputs."""
import json

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

DIGITAL = "digital"
PWM = "pwm"
SERVO = "servo"
KINDS = (DIGITAL, PWM, SERVO)
WHYS = ("command", "rule", "failsafe", "boot", "refused")
NAME_MAX = 32
REFUSED_MAX = 8   # unknown names reported per message at most (a hostile server's list)


def valid_name(n):
    """An output name: 1-32 chars of A-Z a-z 0-9 _ . -"""
    if not isinstance(n, str) or not 1 <= len(n) <= NAME_MAX:
        return False
    for c in n:
        if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "_.-"):
            return False
    return True


def _num(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool) and \
        x == x and x not in (float("inf"), float("-inf"))


def check_value(kind, hi, v):
    """A value for an output of `kind` (hi: a servo's range in degrees) -> the value as set
    (digital 0/1 int, PWM duty float, servo angle); ValueError naming what was expected."""
    if kind == DIGITAL:
        if v is True or v is False:
            return 1 if v else 0
        if isinstance(v, int) and v in (0, 1):
            return v
        raise ValueError("digital value must be 0 or 1")
    if not _num(v):
        raise ValueError("value must be a number")
    if kind == PWM:
        if not 0 <= v <= 1:
            raise ValueError("duty must be 0.0-1.0")
        return float(v)
    if not 0 <= v <= hi:
        raise ValueError("angle must be 0-%s" % hi)
    return v


def check_rule(kind, hi, r):
    """A rule object -> its checked copy (a dict with every key), or ValueError."""
    if not isinstance(r, dict):
        raise ValueError("rule must be an object")
    n = r.get("n")
    if not isinstance(n, str) or not 3 <= len(n) <= 64 or "." not in n:
        raise ValueError("rule.n must name a reading (sensor.quantity)")
    above = r.get("above")  # type: Any
    below = r.get("below")  # type: Any
    if not _num(above) or not _num(below) or below > above:
        raise ValueError("rule needs numbers below <= above")
    en = r.get("enabled", True)
    if en is not True and en is not False:
        raise ValueError("rule.enabled must be true or false")
    try:
        wa = check_value(kind, hi, r.get("when_above"))
        wb = check_value(kind, hi, r.get("when_below"))
    except ValueError as e:
        raise ValueError("rule.when_above/when_below: %s" % e)
    return {"n": n, "above": above, "below": below, "when_above": wa, "when_below": wb,
            "enabled": en}


class Output:
    """One output's state. `v` is what the hardware is set to."""

    def __init__(self, name, kind, safe, hi=180, rule=None):
        self.name = name
        self.kind = kind
        self.hi = hi
        self.safe = check_value(kind, hi, safe)
        self.ver = 0          # ver of the desired record last applied (0: none)
        self.want = None      # its v: what the output goes to without a rule (None: safe)
        self.src = "boot"     # where `want` came from: "boot" (flash) or "command"
        self.rule = check_rule(kind, hi, rule) if rule is not None else None
        self.rule_v = None    # what the rule decided last (None: no reading has yet)
        self.rule_at = 0      # uptime ms of the last good reading (or of the rule's start)
        self.v = self.safe
        self.why = "boot"
        self.err = None       # a refusal to report once
        self.dirty = True     # to be reported

    def ruled(self):
        r = self.rule
        return r is not None and r["enabled"]


class Core:
    """outputs: [Output]; failsafe_s: seconds without the link (and, for an output a rule
    drives, without a good reading) before `safe` (0: never); now: uptime ms at boot."""

    def __init__(self, outputs, failsafe_s, now):
        self.outputs = outputs
        self._by = {}
        for o in outputs:
            self._by[o.name] = o
        self.failsafe_ms = int(failsafe_s * 1000)
        self.down_at = now      # the link is down from boot until the first welcome
        self.failsafe = False   # link failsafe engaged
        self.save_due = False   # a command changed a record: saved() to flash
        self.dirty = True
        self._refused = []      # (name, err) of unknown outputs, for the next report
        self.watch = {}  # type: dict  # reading name -> [Output] whose enabled rule reads it
        self._rewatch(now)

    # ---- boot ----

    def restore(self, saved, modes, now):
        """At boot: outputs whose mode (modes[name], "safe" or "last") is "last" take the
        record kept in flash (`saved`, as saved() wrote it; anything odd in it is ignored:
        that output stays safe)."""
        if not isinstance(saved, dict):
            return
        for o in self.outputs:
            rec = saved.get(o.name)
            if modes.get(o.name) != "last" or not isinstance(rec, dict):
                continue
            ver = rec.get("ver")
            if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
                continue
            try:
                self._take(o, rec, ver, "boot")
            except ValueError:
                continue
        self._rewatch(now)
        self.save_due = False
        self._drive_all(now)

    # ---- the server's desired state ----

    def desired(self, out, full, now):
        """Apply a `desired` message's records (out: name -> record). Outputs whose records
        were applied or refused are marked for the report; with `full`, all are."""
        if not isinstance(out, dict):
            return
        for name in out:
            o = self._by.get(name)
            if o is None:
                if len(self._refused) < REFUSED_MAX and valid_name(name):
                    self._refused.append((name, "unknown output"))
                    self.dirty = True
                continue
            rec = out[name]
            ver = rec.get("ver") if isinstance(rec, dict) else None
            if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
                self._refuse(o, "record needs an object with ver >= 1")
                continue
            if ver <= o.ver:
                continue  # a resend or an older record: a newer change stays
            try:
                self._take(o, rec, ver, "command")
            except ValueError as e:
                self._refuse(o, str(e))
                continue
            o.dirty = True
            self.save_due = True
        if full:
            for o in self.outputs:
                o.dirty = True
            self.dirty = True
        self._rewatch(now)
        self._drive_all(now)

    def _take(self, o, rec, ver, src):
        # checked whole before anything changes: a refused record leaves the output as it was
        v, rule = o.want, o.rule
        if "v" in rec:
            v = None if rec["v"] is None else check_value(o.kind, o.hi, rec["v"])
        if "rule" in rec:
            rule = None if rec["rule"] is None else check_rule(o.kind, o.hi, rec["rule"])
        if rule != o.rule:
            o.rule_v = None
        o.want, o.rule, o.ver, o.src = v, rule, ver, src

    def _refuse(self, o, err):
        o.err = err
        o.dirty = True
        self.dirty = True

    def _rewatch(self, now):
        # reading name -> outputs whose enabled rule reads it (reading() looks up one name)
        w = {}  # type: dict
        for o in self.outputs:
            if o.ruled():
                n = o.rule["n"]
                if n not in w:
                    w[n] = []
                w[n].append(o)
                if o.rule_v is None:
                    o.rule_at = now  # the rule's failsafe counts from its start
        self.watch = w

    # ---- readings, time, the link ----

    def reading(self, name, value, now):
        """A new reading (value None: a failed one). True if an output changed."""
        lst = self.watch.get(name)
        if lst is None:
            return False
        ch = False
        for o in lst:
            if value is not None and _num(value):
                r = o.rule
                if value > r["above"]:
                    o.rule_v = r["when_above"]
                elif value < r["below"]:
                    o.rule_v = r["when_below"]
                o.rule_at = now
            ch = self._drive(o, now) or ch
        return ch

    def tick(self, now, down_since):
        """The link's state (down_since: uptime ms it went down, None: up); the failsafes'
        time. True if an output changed."""
        fs = self.failsafe_ms
        self.down_at = down_since
        self.failsafe = bool(fs) and down_since is not None and now - down_since >= fs
        return self._drive_all(now)

    # ---- what each output does ----

    def _drive_all(self, now):
        ch = False
        for o in self.outputs:
            ch = self._drive(o, now) or ch
        return ch

    def _drive(self, o, now):
        fs = self.failsafe_ms
        if o.ruled():
            # rules run without the link; safe when their reading stops coming
            if fs and now - o.rule_at >= fs:
                v, why = o.safe, "failsafe"
            elif o.rule_v is not None:
                v, why = o.rule_v, "rule"
            else:
                v, why = o.v, o.why  # in the band before any decision: keep
        elif o.want is not None and self.failsafe:
            v, why = o.safe, "failsafe"
        elif o.want is not None:
            v, why = o.want, o.src
        else:  # nothing asked of it: at safe already (a failsafe changes nothing)
            v, why = o.safe, "boot" if o.ver == 0 else o.src
        if v == o.v and why == o.why and type(v) is type(o.v):
            return False
        o.v = v
        o.why = why
        o.dirty = True
        self.dirty = True
        return True

    # ---- out ----

    def report(self, everything=False):
        """The `reported` message for the outputs marked (or all), clearing the marks; None
        when there is nothing to say."""
        out = {}
        for o in self.outputs:
            if o.dirty or everything:
                e = {"v": o.v, "ver": o.ver, "why": o.why}
                if o.err is not None:
                    e["why"] = "refused"
                    e["err"] = o.err
                    o.err = None
                out[o.name] = e
                o.dirty = False
        for name, err in self._refused:
            out[name] = {"v": None, "ver": 0, "why": "refused", "err": err}
        self._refused = []
        self.dirty = False
        return reported(out) if out else None

    def saved(self):
        """What flash keeps: each output's last applied record (those that have one)."""
        d = {}
        for o in self.outputs:
            if o.ver:
                d[o.name] = {"ver": o.ver, "v": o.want, "rule": o.rule}
        return d


def parse_desired(text):
    """A `desired` message's text -> (out, full). Parsed here, not in proto.py, so a board
    without outputs loads none of it; the message shape is checked as proto checks its own
    (ProtoError 1007), the records one by one by Core.desired (refused, reported)."""
    from fieldlink.proto import CLOSE_BAD_DATA, ProtoError, _decode
    obj = _decode(text)
    out = obj.get("out")
    if obj["t"] != "desired" or not isinstance(out, dict):
        raise ProtoError(CLOSE_BAD_DATA, "desired: out must be an object")
    return out, obj.get("full") is True


def reported(out):
    """{"t":"reported","out":{...}} as JSON text."""
    return json.dumps({"t": "reported", "out": out})
