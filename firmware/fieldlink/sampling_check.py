"""Checking the config's "sampling" object and the filter specs in it (errors name the key).
Boot only: sampling.check_config imports this for the check and drops it again, so a
streaming board holds none of its code or messages."""

_ENTRY_KEYS = ("interval_s", "filters")


def _is_num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_config(cfg):
    """See sampling.check_config."""
    if cfg is None:
        return
    if not isinstance(cfg, dict):
        raise ValueError("sampling: expected an object, got %r" % (cfg,))
    for key, entry in cfg.items():
        path = "sampling." + key
        if not isinstance(entry, dict):
            raise ValueError("%s: expected an object, got %r" % (path, entry))
        for k in entry:
            if k not in _ENTRY_KEYS:
                raise ValueError("%s.%s: unknown key (expected one of %s)"
                                 % (path, k, ", ".join(_ENTRY_KEYS)))
        if "interval_s" in entry:
            v = entry["interval_s"]
            if not _is_num(v) or v <= 0:
                raise ValueError("%s.interval_s: expected a number > 0, got %r" % (path, v))
            if "." in key:
                raise ValueError("%s.interval_s: intervals are per sensor, not per channel"
                                 % path)
        if "filters" in entry:
            fl = entry["filters"]
            if not isinstance(fl, list):
                raise ValueError("%s.filters: expected a list, got %r" % (path, fl))
            for i, spec in enumerate(fl):
                check_filter(spec, "%s.filters[%d]" % (path, i))


def _num(spec, key, path, default=None, low=None, integer=False, positive=False):
    v = spec.get(key, default)
    if v is None and default is None and key not in spec:
        raise ValueError("%s.%s: required" % (path, key))
    ok = _is_num(v)
    if ok and integer:
        ok = isinstance(v, int)
    if ok and low is not None:
        ok = v >= low
    if ok and positive:
        ok = v > 0
    if not ok:
        what = "an integer" if integer else "a number"
        if low is not None:
            what += " >= %s" % low
        if positive:
            what += " > 0"
        raise ValueError("%s.%s: expected %s, got %r" % (path, key, what, v))
    return v


def check_filter(spec, path):
    """Validate one filter spec (see filters.py); raise ValueError naming the key. Returns
    the spec."""
    if not isinstance(spec, dict):
        raise ValueError("%s: expected an object like {\"type\": \"median\", \"window\": 5}, "
                         "got %r" % (path, spec))
    t = spec.get("type")
    known = {"moving_average": ("window",), "median": ("window",),
             "delta": ("threshold", "heartbeat_s"), "throttle": ("interval_s",),
             "clamp": ("min", "max"), "calibrate": ("offset", "scale")}
    if t not in known:
        raise ValueError("%s.type: expected one of %s, got %r"
                         % (path, ", ".join(sorted(known)), t))
    for k in spec:
        if k != "type" and k not in known[t]:
            raise ValueError("%s.%s: unknown key for a %s filter" % (path, k, t))
    if t in ("moving_average", "median"):
        _num(spec, "window", path, integer=True, low=1)
    elif t == "delta":
        _num(spec, "threshold", path, low=0)
        _num(spec, "heartbeat_s", path, default=300, positive=True)
    elif t == "throttle":
        _num(spec, "interval_s", path, positive=True)
    elif t == "clamp":
        lo = _num(spec, "min", path, default=None) if "min" in spec else None
        hi = _num(spec, "max", path, default=None) if "max" in spec else None
        if lo is None and hi is None:
            raise ValueError("%s: a clamp needs min or max" % path)
        if lo is not None and hi is not None and lo > hi:
            raise ValueError("%s.min: %r is above max %r" % (path, lo, hi))
    elif t == "calibrate":
        if "offset" in spec:
            _num(spec, "offset", path)
        if "scale" in spec:
            _num(spec, "scale", path)
    return spec
