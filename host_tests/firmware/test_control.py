# dual: runs on CPython (pytest) and MicroPython (test_dual_on_micropython.py)
"""The control core (fieldlink/control.py): versions only move forward, refusals are
reported, rules switch with hysteresis, failsafes count on an injected clock."""
import json

from dualsupport import load_vectors, raises

from fieldlink import control, control_rec
from fieldlink.control import Core
from fieldlink.control_rec import output as Output

FS = 10  # failsafe_s in these tests


def _core(now=0, rule=None, failsafe_s=FS):
    outs = [Output("fan", "digital", 0),
            Output("heater", "pwm", 0.0, rule=rule),
            Output("vent", "servo", 90, hi=180)]
    return Core(outs, failsafe_s, now)


def _rep(c, everything=False):
    t = c.report(everything)
    return None if t is None else json.loads(t)["out"]


def _up(c, now):
    c.tick(now, None)


def test_boot_state_is_safe_with_ver_0_and_why_boot():
    c = _core()
    r = _rep(c, True)
    assert r == {"fan": {"v": 0, "ver": 0, "why": "boot"},
                 "heater": {"v": 0.0, "ver": 0, "why": "boot"},
                 "vent": {"v": 90, "ver": 0, "why": "boot"}}
    assert c.report() is None  # nothing marked any more


def test_newer_ver_applies_and_is_reported_as_command():
    c = _core()
    _up(c, 0)
    c.report(True)
    c.desired({"fan": {"ver": 3, "v": 1}}, False, 100)
    assert c.outputs[0].v == 1
    assert _rep(c) == {"fan": {"v": 1, "ver": 3, "why": "command"}}
    assert c.save_due and c.saved() == {"fan": {"ver": 3, "v": 1, "rule": None}}


def test_older_ver_after_newer_is_ignored():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 5, "v": 1}}, False, 0)
    c.report()
    c.desired({"fan": {"ver": 4, "v": 0}}, False, 1)
    assert c.outputs[0].v == 1 and c.outputs[0].ver == 5
    assert c.report() is None


def test_resend_of_the_same_ver_is_ignored():
    c = _core()
    _up(c, 0)
    c.desired({"heater": {"ver": 2, "v": 0.5}}, False, 0)
    c.report()
    c.save_due = False
    c.desired({"heater": {"ver": 2, "v": 0.9}}, False, 1)  # same ver, another body: ignored
    assert c.outputs[1].v == 0.5 and not c.save_due and c.report() is None


def test_full_reports_every_output_even_when_nothing_changed():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 1, "v": 1}}, True, 0)
    c.report()
    c.desired({"fan": {"ver": 1, "v": 1}}, True, 5)
    assert sorted(_rep(c)) == ["fan", "heater", "vent"]


def test_unknown_output_is_refused_by_name():
    c = _core()
    _up(c, 0)
    c.report(True)
    c.desired({"pump": {"ver": 1, "v": 1}}, False, 0)
    assert _rep(c) == {"pump": {"v": None, "ver": 0, "why": "refused",
                                "err": "unknown output"}}


def test_hostile_unknown_names_are_bounded_and_checked():
    c = _core()
    c.report(True)
    out = {}
    for i in range(50):
        out["x%d" % i] = {"ver": 1, "v": 1}
    out["bad name!"] = {"ver": 1, "v": 1}
    c.desired(out, False, 0)
    r = _rep(c)
    assert len(r) == control_rec.REFUSED_MAX and "bad name!" not in r


def test_invalid_values_are_refused_and_change_nothing():
    c = _core()
    _up(c, 0)
    c.report(True)
    for name, rec, err in (("fan", {"ver": 1, "v": 2}, "digital value must be 0 or 1"),
                           ("heater", {"ver": 1, "v": 1.5}, "duty must be 0.0-1.0"),
                           ("heater", {"ver": 1, "v": "hot"}, "value must be a number"),
                           ("vent", {"ver": 1, "v": 181}, "angle must be 0-180"),
                           ("fan", {"v": 1}, "record needs an object with ver >= 1"),
                           ("fan", {"ver": True, "v": 1}, "record needs an object with ver >= 1"),
                           ("fan", 7, "record needs an object with ver >= 1")):
        c.desired({name: rec}, False, 0)
        r = _rep(c)
        assert r[name]["why"] == "refused" and r[name]["err"] == err, (name, rec, r)
        assert r[name]["ver"] == 0
    assert [o.v for o in c.outputs] == [0, 0.0, 90]
    assert not c.save_due


def test_a_refused_record_does_not_block_a_later_valid_one():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 2, "v": 9}}, False, 0)
    c.report()
    c.desired({"fan": {"ver": 3, "v": 1}}, False, 0)
    assert _rep(c) == {"fan": {"v": 1, "ver": 3, "why": "command"}}


def test_bad_rules_are_refused():
    c = _core()
    for rule, part in (({"n": "env.temperature", "above": 20, "below": 26,
                         "when_above": 0, "when_below": 1}, "below <= above"),
                       ({"n": "temperature", "above": 26, "below": 24,
                         "when_above": 0, "when_below": 1}, "rule.n"),
                       ({"n": "env.temperature", "above": 26, "below": 24,
                         "when_above": 0, "when_below": 2}, "when_below"),
                       ({"n": "env.temperature", "above": 26, "below": 24,
                         "when_above": 0, "when_below": 1, "enabled": "yes"}, "enabled"),
                       ([1], "object")):
        c.desired({"fan": {"ver": 1, "rule": rule}}, False, 0)
        r = _rep(c)
        assert r["fan"]["why"] == "refused" and part in r["fan"]["err"], (rule, r)
        assert c.outputs[0].rule is None


FAN_RULE = {"n": "env.temperature", "above": 26.0, "below": 24.0, "when_above": 1,
            "when_below": 0}


def test_rule_switches_with_hysteresis():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 1, "v": 0, "rule": FAN_RULE}}, False, 0)
    fan = c.outputs[0]
    seen = []
    for t, temp in enumerate((25.0, 26.5, 25.0, 24.5, 23.9, 25.5, 26.0, 26.01)):
        c.reading("env.temperature", temp, t * 100)
        seen.append(fan.v)
    # in the band first: keeps 0; above 26 -> 1; in the band: keeps 1 until below 24
    assert seen == [0, 1, 1, 1, 0, 0, 0, 1]
    assert fan.why == "rule"
    assert not c.reading("env.humidity", 99.0, 900)  # another reading: nothing


def test_heater_rule_is_the_reverse_and_disabling_returns_to_v():
    heat = {"n": "env.temperature", "above": 26, "below": 24, "when_above": 0.0,
            "when_below": 0.75}
    c = _core()
    _up(c, 0)
    c.desired({"heater": {"ver": 1, "v": 0.2, "rule": heat}}, False, 0)
    h = c.outputs[1]
    c.reading("env.temperature", 20.0, 1)
    assert h.v == 0.75
    c.reading("env.temperature", 30.0, 2)
    assert h.v == 0.0
    off = dict(heat)
    off["enabled"] = False
    c.desired({"heater": {"ver": 2, "rule": off}}, False, 3)  # v kept from ver 1
    assert h.v == 0.2 and h.why == "command"
    c.reading("env.temperature", 20.0, 4)
    assert h.v == 0.2


def test_a_failed_reading_does_not_switch_but_a_silent_sensor_goes_safe():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 1, "rule": FAN_RULE}}, False, 0)
    c.reading("env.temperature", 30.0, 1000)
    fan = c.outputs[0]
    assert fan.v == 1
    c.reading("env.temperature", None, 2000)
    c.reading("env.temperature", float("nan"), 3000)
    assert fan.v == 1
    c.tick(1000 + FS * 1000 - 1, None)
    assert fan.v == 1
    c.tick(1000 + FS * 1000, None)
    assert fan.v == 0 and fan.why == "failsafe"
    c.reading("env.temperature", 30.0, 20000)
    assert fan.v == 1 and fan.why == "rule"


def test_link_failsafe_after_failsafe_s_and_back():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 1, "v": 1}, "heater": {"ver": 1, "v": 0.6}}, True, 0)
    c.report()
    down = 5000
    assert not c.tick(down, down)
    assert not c.tick(down + FS * 1000 - 1, down)  # not yet
    assert c.outputs[0].v == 1
    assert c.tick(down + FS * 1000, down)
    assert [(o.v, o.why) for o in c.outputs[:2]] == [(0, "failsafe"), (0.0, "failsafe")]
    r = _rep(c)
    assert r["fan"] == {"v": 0, "ver": 1, "why": "failsafe"} and "vent" not in r
    assert c.tick(down + FS * 1000 + 50, None)  # the link is back
    assert [(o.v, o.why) for o in c.outputs[:2]] == [(1, "command"), (0.6, "command")]


def test_failsafe_from_boot_without_a_link_and_0_means_never():
    c = _core()  # down since boot (0)
    c.restore({"fan": {"ver": 4, "v": 1, "rule": None}}, {"fan": "last"}, 0)
    assert c.outputs[0].v == 1 and c.outputs[0].why == "boot"
    c.tick(FS * 1000, 0)
    assert c.outputs[0].v == 0 and c.outputs[0].why == "failsafe"
    n = _core(failsafe_s=0)
    n.restore({"fan": {"ver": 4, "v": 1, "rule": None}}, {"fan": "last"}, 0)
    n.tick(10 ** 9, 0)
    assert n.outputs[0].v == 1


def test_a_rule_keeps_running_with_the_link_down():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 1, "v": 0, "rule": FAN_RULE}}, False, 0)
    c.tick(100 * 1000, 0)  # link down long ago: failsafe for commanded outputs
    assert c.failsafe
    c.reading("env.temperature", 27.0, 100 * 1000)
    assert c.outputs[0].v == 1 and c.outputs[0].why == "rule"


def test_restore_last_or_safe_and_hostile_flash():
    saved = {"fan": {"ver": 4, "v": 1, "rule": None},
             "heater": {"ver": 2, "v": 7, "rule": None},  # invalid: ignored
             "vent": {"ver": 3, "v": 45, "rule": None}}
    c = _core()
    c.restore(saved, {"fan": "last", "heater": "last", "vent": "safe"}, 0)
    assert [(o.v, o.ver, o.why) for o in c.outputs] == [(1, 4, "boot"), (0.0, 0, "boot"),
                                                       (90, 0, "boot")]
    assert not c.save_due
    # a resend of the restored ver changes nothing; a newer one applies
    _up(c, 1)
    c.desired({"fan": {"ver": 4, "v": 0}}, True, 1)
    assert c.outputs[0].v == 1
    for junk in (None, [], {"fan": 3}, {"fan": {"ver": "4", "v": 1}}):
        j = _core()
        j.restore(junk, {"fan": "last"}, 0)
        assert j.outputs[0].v == 0 and j.outputs[0].ver == 0


def test_saved_round_trips_through_json_with_a_rule():
    c = _core()
    _up(c, 0)
    c.desired({"fan": {"ver": 9, "v": 1, "rule": FAN_RULE}}, False, 0)
    again = _core()
    again.restore(json.loads(json.dumps(c.saved())), {"fan": "last"}, 0)
    f = again.outputs[0]
    assert f.ver == 9 and f.want == 1 and f.rule["above"] == 26.0 and f.rule["enabled"]


def test_board_rule_runs_from_boot():
    heat = {"n": "env.temperature", "above": 26, "below": 24, "when_above": 0.0,
            "when_below": 1.0}
    c = _core(rule=heat)
    c.reading("env.temperature", 21.0, 10)
    assert c.outputs[1].v == 1.0 and c.outputs[1].why == "rule"


def test_vectors_desired_parse_and_bad_ones_are_1007():
    from fieldlink import proto
    v = load_vectors("proto")
    for case in v["control_desired"]:
        assert control_rec.parse_desired(case["text"]) == (case["out"], case["full"]), case
    for case in v["control_desired_bad"]:
        e = raises(proto.ProtoError, control_rec.parse_desired, case["text"])
        assert e.code == case["code"], case


def test_vectors_reported():
    for v in load_vectors("proto")["control_reported"]:
        assert json.loads(control.reported(v["out"])) == json.loads(v["text"])
