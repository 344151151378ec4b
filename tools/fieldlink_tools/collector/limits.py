"""Bounds that keep one peer from costing the others (docs/collector.md "Limits"): what a
connection may make the server write without reading it, file descriptors kept for devices,
and a log that a flood cannot grow without bound."""
import collections
import logging
import resource
import time

from websockets.asyncio.server import ServerConnection

# Bytes of automatic replies (pongs, close frames) a peer may leave unread: a ping flood that
# never reads its pongs would otherwise grow the server byte for byte.
MAX_REPLY_BACKLOG = 256 * 1024
# Handshakes in progress from one address (idle TCP connections cost a descriptor and memory
# until the open timeout); generous, as a site's devices behind one NAT reconnect together.
MAX_PENDING_PER_SOURCE = 256
# Descriptors that are not connections: the database and its WAL, the log, listening sockets.
FD_SPARE = 64


def fd_budget():
    """Connections this process can hold: the soft RLIMIT_NOFILE, raised to the hard one
    first, less FD_SPARE."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return max(0, soft - FD_SPARE)


class BoundedConnection(ServerConnection):
    """websockets' server connection, telling the collector when a TCP connection opens and
    closes (descriptor accounting) and closing a peer that leaves more than MAX_REPLY_BACKLOG
    of automatic replies unread."""

    def __init__(self, watcher, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fl_watcher = watcher
        self.fl_source = None        # set while the opening handshake is in progress
        self.fl_reserve_only = False  # opened inside the descriptors kept for devices
        self._reply_debt = 0

    def connection_made(self, transport):
        super().connection_made(transport)
        self.fl_watcher.tcp_opened(self, transport)

    def connection_lost(self, exc):
        self.fl_watcher.tcp_closed(self)
        super().connection_lost(exc)

    def data_received(self, data):
        t = self.transport
        before = t.get_write_buffer_size()
        super().data_received(data)
        after = t.get_write_buffer_size()
        # What this call added is websockets' own answers (our sends happen elsewhere); what
        # the peer reads drains it (the debt never exceeds what is still buffered).
        self._reply_debt = min(self._reply_debt + max(0, after - before), after)
        if self._reply_debt > MAX_REPLY_BACKLOG:
            self.fl_watcher.reply_backlog(self)
            t.abort()


class RepeatFilter(logging.Filter):
    """At most `burst` records per message template and logger every `window` seconds; then
    one line says how many were left out. A flood (refused connections, descriptors running
    out) costs the disk a few lines, not megabytes a minute."""

    def __init__(self, window=10.0, burst=20, clock=time.monotonic):
        super().__init__()
        self.window = window
        self.burst = burst
        self._clock = clock
        self._seen = collections.OrderedDict()   # (logger, template) -> [start, count]

    def filter(self, record):
        key = (record.name, str(record.msg))
        now = self._clock()
        got = self._seen.get(key)
        if got is None or now - got[0] >= self.window:
            left_out = got[1] - self.burst if got is not None and got[1] > self.burst else 0
            self._seen[key] = [now, 1]
            self._seen.move_to_end(key)
            while len(self._seen) > 1000:
                self._seen.popitem(last=False)
            if left_out:
                record.msg = "%s (and %d similar lines left out in %.0f s)" % (
                    record.getMessage(), left_out, self.window)
                record.args = None
            return True
        got[1] += 1
        return got[1] <= self.burst
