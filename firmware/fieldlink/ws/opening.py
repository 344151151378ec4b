"""Opening a WebSocket connection: DNS, TCP, TLS and the HTTP upgrade (RFC 6455 §4.1), the
I/O side of client.connect(). connect() loads this module (with the pure handshake module, and
tls.py for wss://) only while connecting and drops them after: an open connection needs none."""

import asyncio
import os

from . import handshake
from .errors import ConnectTimeout, HandshakeError, WSError

try:  # MicroPython: the connect is awaited through asyncio's own poller
    from asyncio import core as _core  # type: ignore[attr-defined]  # (not in the stubs)
except ImportError:
    _core = None


async def open_ws(io, rbuf, url, headers, subprotocols, ca_file, connect_timeout_s,
                  handshake_timeout_s):
    """Connect io (client._SocketIO or _StreamIO) to url and run the opening handshake,
    reading into rbuf. Returns (subprotocol, the bytes after the response head: the first
    frames). On failure closes io and raises WSError subclasses only."""
    secure, host, port, path = handshake.parse_url(url)
    stage = "connect"
    try:
        opener = _open_socket if io.direct else _open_stream
        await _timed(opener(io, host, port, secure, ca_file), connect_timeout_s,
                     "TCP connect to %s:%d" % (host, port))
        stage = "handshake"
        sub, rest = await _timed(
            _handshake(io, rbuf, host, port, path, secure, headers, subprotocols),
            handshake_timeout_s, "opening handshake with %s:%d" % (host, port))
    except WSError:
        io.close()
        raise
    except OSError as e:
        io.close()
        n = getattr(e, "errno", None)
        if n is None and e.args and isinstance(e.args[0], int):
            n = e.args[0]
        if secure:
            from . import tls
            if n is not None and n < 0 or tls.is_tls_error(e):  # (mbedTLS codes are < 0)
                err = HandshakeError(None, "TLS: %s" % (e,))
                err.errno = n
                raise err
        raise WSError("%s %s:%d failed: %s" % (stage, host, port, e), errno=n)
    except ValueError as e:
        io.close()
        if not secure:
            raise
        # MicroPython's mbedTLS reports a failed verification (CA, hostname) as ValueError
        raise HandshakeError(None, "TLS: %s" % " ".join(str(e).split()))
    except BaseException:
        io.close()  # cancelled: leave no socket behind
        raise
    return sub, rest


async def _timed(aw, timeout_s, what):
    if not timeout_s:
        return await aw
    try:
        return await asyncio.wait_for(aw, timeout_s)
    except asyncio.TimeoutError:
        raise ConnectTimeout("%s: no answer within %s s" % (what, timeout_s))


async def _handshake(io, rbuf, host, port, path, secure, headers, subprotocols):
    key = handshake.make_key(os.urandom)
    req = handshake.build_request(host, port, path, key, secure, headers, subprotocols)
    await io.write(req, len(req))
    head = bytearray()
    while True:
        n = await io.readinto(rbuf)
        if not n:
            raise HandshakeError(None, "connection closed during the handshake")
        head.extend(memoryview(rbuf)[:n])
        k = handshake.split_response(head)
        if k >= 0:
            break
    sub = handshake.check_response(memoryview(head)[:k], key, subprotocols)
    return sub, bytes(head[k:])


def _open_socket(io, host, port, secure, ca_file):
    # MicroPython: a non-blocking socket; the connect is awaited through asyncio's poller
    import socket
    from errno import EINPROGRESS
    if handshake.is_ip_literal(host) and ":" not in host:
        family, addr = socket.AF_INET, None  # no DNS for an IP literal
    else:
        ai = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM)[0]
        family, addr = ai[0], ai[-1]
    s = io.s = socket.socket(family, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        if addr is not None:
            s.connect(addr)
        else:
            try:
                s.connect((host, port))  # ports whose sockets take (ip, port) tuples
            except TypeError:  # the unix port wants a raw struct sockaddr_in
                import sys
                ip = socket.inet_pton(  # type: ignore[attr-defined]  # (unix port only)
                    socket.AF_INET, host)
                s.connect(socket.AF_INET.to_bytes(2, sys.byteorder) + port.to_bytes(2, "big")
                          + ip + bytes(8))
    except OSError as e:
        if e.errno != EINPROGRESS:
            raise
    yield _core._io_queue.queue_write(s)
    if secure:
        # The TLS handshake runs on the first write (the HTTP request), so it counts
        # against handshake_timeout_s.
        from . import tls
        s = tls.context(ca_file).wrap_socket(
            s, server_hostname=host, do_handshake_on_connect=False)
        s.setblocking(False)
        io.s = s
        io.plain = False


if _core is None:  # CPython only
    async def _open_stream(io, host, port, secure, ca_file):
        # asyncio streams (the TLS handshake happens in open_connection)
        ctx = None
        if secure:
            from . import tls
            ctx = tls.context(ca_file)
        io.r, io.w = await asyncio.open_connection(
            host, port, ssl=ctx, server_hostname=host if secure else None)
