"""The supervisor's HELLO state: send hello (where to resume), take the welcome (what the
server has, its time). Imported for each connection by Supervisor._once and dropped again, so
its code takes no heap while streaming."""
import asyncio

from fieldlink import log, proto
from fieldlink.supervisor import E_OK, LinkFailure

_log = log.Logger("link")


async def run(sup):
    """E_OK (streaming may start), or the failure event from sup._failed()."""
    ob = sup.outbox
    ob.on_connect()
    try:
        await sup._send(proto.hello(sup.cfg.device_id, sup.fw, sup.board, ob.boot,
                                    ob.next_seq, ob.first(), ob.held(), ob.dropped,
                                    sup.clock.synced, ob.epoch))
        ev = await asyncio.wait_for(_welcome(sup.ws), sup.cfg.connect_timeout_s)
        if ev[0] == "error":
            raise LinkFailure("server error %s: %s" % (ev[1], ev[2]))
        if ev[0] != "welcome":
            raise proto.ProtoError(proto.CLOSE_POLICY, "expected welcome")
        if ev[1] != proto.VERSION:
            raise proto.ProtoError(proto.CLOSE_POLICY, "welcome v%s" % ev[1])
    except Exception as e:
        if isinstance(e, asyncio.TimeoutError):
            e = LinkFailure("no welcome within %s s" % sup.cfg.connect_timeout_s)
        await sup._close(sup.ws, getattr(e, "code", proto.CLOSE_GOING_AWAY), str(e))
        sup.ws = None
        return sup._failed(e, "hello")
    ack = ev[2]
    ob.welcome(ack)
    if sup.clock.set_unix_ms(ev[3], "server") and sup.clock.source == "server":
        _log.debug("clock set from the collector's welcome")
    sup.connects += 1
    _log.info("streaming to %s (ack %d, next %d, held %d)", sup.cfg.url, ack, ob.next_seq,
              ob.held())
    return E_OK


async def _welcome(ws):
    # The first message of a type this version knows, under one deadline: parse_server gives
    # a type it does not know as (t,), to be ignored (docs/protocol.md).
    while True:
        ev = proto.parse_server(await ws.recv())
        if len(ev) > 1:
            return ev
        _log.debug("ignored message type %s", ev[0])
