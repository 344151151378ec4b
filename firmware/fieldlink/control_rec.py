"""Desired records for the control core (control.py): checked, and applied only when newer;
the boot's restore from the flash file. Imported for each `desired` message and for the boot,
then dropped (control._rec): records are rare, their code takes no heap in between. Pure."""
from fieldlink.control import DIGITAL, PWM, Output

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

NAME_MAX = 32
REFUSED_MAX = 8   # unknown names reported per message at most (a hostile server's list)


def _num(x):
    return (isinstance(x, int) or isinstance(x, float)) and not isinstance(x, bool) and \
        x == x and x not in (float("inf"), float("-inf"))


def valid_name(n):
    """An output name: 1-32 chars of A-Z a-z 0-9 _ . -"""
    if not isinstance(n, str) or not 1 <= len(n) <= NAME_MAX:
        return False
    for c in n:
        if not (("a" <= c <= "z") or ("A" <= c <= "Z") or ("0" <= c <= "9") or c in "_.-"):
            return False
    return True


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


def output(name, kind, safe, hi=180, rule=None):
    """A control.Output with its safe value and rule checked (ValueError)."""
    return Output(name, kind, check_value(kind, hi, safe), hi,
                  None if rule is None else check_rule(kind, hi, rule))


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


def restore(core, saved, modes, now):
    """At boot: outputs whose mode (modes[name], "safe" or "last") is "last" take the
    record kept in flash (`saved`, as saved() wrote it; anything odd in it is ignored:
    that output stays safe)."""
    if not isinstance(saved, dict):
        return
    for o in core.outputs:
        rec = saved.get(o.name)
        if modes.get(o.name) != "last" or not isinstance(rec, dict):
            continue
        ver = rec.get("ver")
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            continue
        try:
            _take(o, rec, ver, "boot")
        except ValueError:
            continue
    core.rewatch(now)
    core.save_due = False
    core.drive_all(now)


def desired(core, out, full, now):
    """Apply a `desired` message's records (out: name -> record). Outputs whose records
    were applied or refused are marked for the report; with `full`, all are."""
    if not isinstance(out, dict):
        return
    for name in out:
        o = core.by.get(name)
        if o is None:
            if len(core.refused) < REFUSED_MAX and valid_name(name):
                core.refused.append((name, "unknown output"))
                core.dirty = True
            continue
        rec = out[name]
        ver = rec.get("ver") if isinstance(rec, dict) else None
        if not isinstance(ver, int) or isinstance(ver, bool) or ver < 1:
            _refuse(core, o, "record needs an object with ver >= 1")
            continue
        if ver <= o.ver:
            continue  # a resend or an older record: a newer change stays
        try:
            _take(o, rec, ver, "command")
        except ValueError as e:
            _refuse(core, o, str(e))
            continue
        o.dirty = True
        core.save_due = True
    if full:
        for o in core.outputs:
            o.dirty = True
        core.dirty = True
    core.rewatch(now)
    core.drive_all(now)


def _take(o, rec, ver, src):
    # checked whole before anything changes: a refused record leaves the output as it was
    v, rule = o.want, o.rule
    if "v" in rec:
        v = None if rec["v"] is None else check_value(o.kind, o.hi, rec["v"])
    if "rule" in rec:
        rule = None if rec["rule"] is None else check_rule(o.kind, o.hi, rec["rule"])
    if rule != o.rule:
        o.rule_v = None
    o.want, o.rule, o.ver, o.src = v, rule, ver, src


def _refuse(core, o, err):
    o.err = err
    o.dirty = True
    core.dirty = True
