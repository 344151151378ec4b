"""Server commands (docs/protocol.md "Commands"). Imported for one command and dropped again
(supervisor._seldom): commands are rare, their code takes no heap in between."""
from fieldlink import log, proto

_log = log.Logger("link")


def run(ev, sampler):
    """Carry out one ("cmd", id, cmd, args) -> (its reply, what only the link can do: "health"
    to send before the reply, "reboot" to do after it, or None)."""
    _, cid, cmd, args = ev
    ok = True
    result = None
    err = None
    then = None
    try:
        if cmd == "set_interval":
            if sampler is None:
                raise ValueError("no sampler")
            result = sampler.set_interval(args.get("sensor", "*"), args.get("interval_s"))
        elif cmd == "sample_now":
            if sampler is not None:
                sampler.sample_now()
        elif cmd == "health" or cmd == "reboot":
            then = cmd
        else:
            ok, err = False, "unknown command"
    except (ValueError, TypeError, KeyError) as e:
        ok, err = False, str(e) or type(e).__name__
    _log.info("command %s %s: %s", cmd, "ok" if ok else "failed", result if ok else err)
    return proto.reply(cid, ok, result, err), then
