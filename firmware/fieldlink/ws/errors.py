"""The few exceptions the WebSocket client raises; every failure surfaces as one of these.
Pure module: the sans-I/O core raises them too. One small hierarchy (everything is a WSError);
ConnectionClosed and ProtocolError share one __init__: on MicroPython each method costs heap."""


class WSError(Exception):
    """Base class. `errno` keeps the OSError number when a socket/TLS error was wrapped."""

    def __init__(self, message="", errno=None):
        super().__init__(message)
        self.errno = errno


class HandshakeError(WSError):
    """The opening handshake (RFC 6455 §4.1) failed. `status` is the HTTP status when the
    server answered with something other than 101 (e.g. 401, 503), else None."""

    def __init__(self, status, reason):
        WSError.__init__(self, "handshake failed: %s%s" % ("%d " % status if status else "",
                                                           reason))
        self.status = status
        self.reason = reason


class ConnectionClosed(WSError):
    """The connection is closed. `code`/`reason` come from the close frame, or 1006 when the
    TCP connection was lost without one (RFC 6455 §7.1.5)."""

    _FMT = "connection closed: %d %s"

    def __init__(self, code, reason=""):
        WSError.__init__(self, self._FMT % (code, reason))
        self.code = code
        self.reason = reason


class ProtocolError(WSError):
    """The peer broke RFC 6455; we failed the connection (§7.1.7) with close `code`
    (1002 protocol error, 1007 invalid UTF-8, 1009 message too big)."""

    _FMT = "protocol error %d: %s"
    __init__ = ConnectionClosed.__init__  # (not a subclass of it: sharing the method only)


class LinkDead(WSError):
    """Keepalive: no pong (or any other data) arrived within ping_timeout_s of a ping."""


class ConnectTimeout(WSError):
    """TCP connect, or TLS plus the opening handshake, did not finish in time."""
