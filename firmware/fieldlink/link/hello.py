"""The HELLO state's step: send hello (where to resume), take the welcome (what the server
has, its time). Imported for each connection and dropped again (supervisor._seldom), so its
code takes no heap while streaming."""
import asyncio

TYPE_CHECKING = False
if TYPE_CHECKING:  # mypy only: MicroPython has no typing module
    from typing import Any

from fieldlink import log, proto
from fieldlink.link import LinkFailure

_log = log.Logger("link")


async def run(ws, cfg, outbox, clock, fw, board, control=None):
    """Resume on the open WebSocket `ws` (to cfg.url): the outbox has the welcome's ack when
    this returns; with `control` (a board with outputs), the outputs' whole state has been
    reported after the welcome. Raises what went wrong (the caller closes ws)."""
    ob = outbox
    ob.on_connect()
    h = proto.hello(cfg.device_id, fw, board, ob.boot, ob.next_seq, ob.first(), ob.held(),
                    ob.dropped, clock.synced, ob.epoch)
    wake = getattr(cfg, "wake", None)  # battery mode: the wake cause (duty.py sets it)
    if wake:  # (added here, not in proto: resident code and names stay as they were)
        h = h[:-1] + ',"wake":"%s"}' % wake
    await ws.send(h)
    try:
        ev = await asyncio.wait_for(_welcome(ws), cfg.connect_timeout_s)  # type: Any
    except asyncio.TimeoutError:
        raise LinkFailure("no welcome within %s s" % cfg.connect_timeout_s)
    if ev[0] == "error":
        raise LinkFailure("server error %s: %s" % (ev[1], ev[2]))
    if ev[0] != "welcome":
        raise proto.ProtoError(proto.CLOSE_POLICY, "expected welcome")
    if ev[1] != proto.VERSION:
        raise proto.ProtoError(proto.CLOSE_POLICY, "welcome v%s" % ev[1])
    ack = ev[2]
    ob.welcome(ack)
    if clock.set_unix_ms(ev[3], "server") and clock.source == "server":
        _log.debug("clock set from the collector's welcome")
    if control is not None:
        await ws.send(control.welcome())  # before any batch (docs/protocol.md "Control")
    _log.info("streaming to %s (ack %d, next %d, held %d)", cfg.url, ack, ob.next_seq,
              ob.held())


async def _welcome(ws):
    # The first message of a type this version knows, under one deadline: parse_server gives
    # a type it does not know as (t,), to be ignored (docs/protocol.md).
    while True:
        ev = proto.parse_server(await ws.recv())
        if len(ev) > 1:
            return ev
        _log.debug("ignored message type %s", ev[0])
