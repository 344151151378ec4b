"""Control's pure core (docs/outputs.md, docs/protocol.md "Control"): per output, the desired
record last applied (its ver), the local rule, the failsafe, the value that follows from them,
and the `reported` message. No I/O, no clock: the shell (control_io.py) passes uptime in ms,
sets the hardware to each output's `v` and writes `saved()` to flash when `save_due`. Checking
and applying records (desired messages, the boot's restore) is in control_rec.py, loaded for
each use. Tested on CPython and MicroPython alike. Loaded only on a board that has outputs."""
import json

from fieldlink import lazy

DIGITAL = "digital"
PWM = "pwm"
SERVO = "servo"


def _rec():
    # records are checked and applied by control_rec.py, imported for each desired message
    # (and the boot's restore) and dropped again: its code takes no heap in between
    try:
        return lazy.load("fieldlink.control_rec")
    finally:
        lazy.drop("fieldlink.control_rec")


class Output:
    """One output's state. `v` is what the hardware is set to."""

    def __init__(self, name, kind, safe, hi=180, rule=None):
        """safe, rule: already checked (control_rec.check_value, check_rule)."""
        self.name = name
        self.kind = kind
        self.hi = hi
        self.safe = safe
        self.ver = 0          # ver of the desired record last applied (0: none)
        self.want = None      # its v: what the output goes to without a rule (None: safe)
        self.src = "boot"     # where `want` came from: "boot" (flash) or "command"
        self.rule = rule
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
        self.by = {}
        for o in outputs:
            self.by[o.name] = o
        self.failsafe_ms = int(failsafe_s * 1000)
        self.down_at = now      # the link is down from boot until the first welcome
        self.failsafe = False   # link failsafe engaged
        self.save_due = False   # a command changed a record: saved() to flash
        self.dirty = True
        self.refused = []       # (name, err) of unknown outputs, for the next report
        self.watch = {}  # type: dict  # reading name -> [Output] whose enabled rule reads it
        self.rewatch(now)

    # ---- boot ----

    def restore(self, saved, modes, now):
        """At boot: outputs whose mode (modes[name]) is "last" take their record kept in
        flash (`saved`, as saved() wrote it); see control_rec.restore."""
        _rec().restore(self, saved, modes, now)

    def desired(self, out, full, now):
        """Apply a `desired` message's records (out: name -> record); see
        control_rec.desired."""
        _rec().desired(self, out, full, now)

    def rewatch(self, now):
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
            # a NaN (value != value) counts as a failed reading: it must not keep the
            # rule's failsafe from coming. (No float built here: it runs per reading.)
            if (isinstance(value, int) or isinstance(value, float)) and \
                    not isinstance(value, bool) and value == value:
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
        return self.drive_all(now)

    # ---- what each output does ----

    def drive_all(self, now):
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
        for name, err in self.refused:
            out[name] = {"v": None, "ver": 0, "why": "refused", "err": err}
        self.refused = []
        self.dirty = False
        return reported(out) if out else None

    def saved(self):
        """What flash keeps: each output's last applied record (those that have one)."""
        d = {}
        for o in self.outputs:
            if o.ver:
                d[o.name] = {"ver": o.ver, "v": o.want, "rule": o.rule}
        return d


def reported(out):
    """{"t":"reported","out":{...}} as JSON text."""
    return json.dumps({"t": "reported", "out": out})
