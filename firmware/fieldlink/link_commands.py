"""Server commands (docs/protocol.md "Commands") and the reboot they can ask for. Imported
for one command by Supervisor._once and dropped again: commands are rare, their code takes no
heap in between."""
from fieldlink import log, proto

_log = log.Logger("link")


async def run(sup, ev):
    """Carry out one ("cmd", id, cmd, args) and send its reply."""
    _, cid, cmd, args = ev
    ok = True
    result = None
    err = None
    sampler = sup.sampler
    try:
        if cmd == "set_interval":
            if sampler is None:
                raise ValueError("no sampler")
            result = sampler.set_interval(args.get("sensor", "*"), args.get("interval_s"))
        elif cmd == "sample_now":
            if sampler is not None:
                sampler.sample_now()
        elif cmd == "health":
            await sup.send_health()
        elif cmd == "reboot":
            await sup._send(proto.reply(cid, True, None))
            await reboot(sup)
            return
        else:
            ok, err = False, "unknown command"
    except (ValueError, TypeError, KeyError) as e:
        ok, err = False, str(e) or type(e).__name__
    _log.info("command %s %s: %s", cmd, "ok" if ok else "failed", result if ok else err)
    await sup._send(proto.reply(cid, ok, result, err))


async def reboot(sup):
    """Clean reboot: close the link, everything to flash (no reboot gap), reset."""
    _log.info("rebooting")
    try:
        # sup.ws stays: the sender may still be using it. Closing it can end the stream,
        # and then the teardown cancels this task mid-await: the finally still reboots.
        await sup._close(sup.ws, proto.CLOSE_NORMAL, "reboot")
    finally:
        sup.reset_now()  # (a flash error does not cancel the reboot promised)
