"""The opening handshake (RFC 6455 §4.1): URL parsing, the client's HTTP Upgrade request and
checking the server's response, Sec-WebSocket-Accept included. Pure: bytes in, values out."""

import binascii
import hashlib

from .errors import HandshakeError, WSError



def parse_url(url):
    """'ws[s]://host[:port][/path?query]' -> (secure, host, port, resource)."""
    if url.startswith("ws://"):
        secure, rest, port = False, url[5:], 80
    elif url.startswith("wss://"):
        secure, rest, port = True, url[6:], 443
    else:
        raise WSError("not a ws:// or wss:// URL: %s" % url)
    i = rest.find("/")
    hostport, path = (rest, "/") if i < 0 else (rest[:i], rest[i:])
    if "#" in path:
        raise WSError("fragment in a WebSocket URL: %s" % url)  # §3 forbids it
    if hostport.startswith("["):  # IPv6 literal
        j = hostport.find("]")
        host, tail = hostport[1:j], hostport[j + 1:]
    else:
        k = hostport.rfind(":")
        host, tail = (hostport, "") if k < 0 else (hostport[:k], hostport[k:])
    if tail:
        if not tail.startswith(":") or not tail[1:].isdigit():
            raise WSError("bad port in %s" % url)
        port = int(tail[1:])
    if not host or "@" in host:
        raise WSError("bad host in %s" % url)
    return secure, host, port, path


def is_ip_literal(host):
    """True for dotted-quad IPv4 or an IPv6 literal: no DNS needed."""
    if ":" in host:
        return True
    parts = host.split(".")
    if len(parts) != 4:
        return False
    for p in parts:
        if not p.isdigit() or int(p) > 255:
            return False
    return True


def make_key(randbytes):
    """§4.1: a random 16-byte nonce, base64-encoded."""
    return binascii.b2a_base64(randbytes(16)).strip().decode()


def accept_for(key):
    """§4.2.2: base64(SHA-1(key + GUID)), the value a conforming server must send back."""
    guid = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # §1.3
    return binascii.b2a_base64(hashlib.sha1(key.encode() + guid).digest()).strip().decode()


def build_request(host, port, path, key, secure=False, headers=None, subprotocols=None):
    """The client's opening handshake (§4.1) as bytes. headers: a dict or (name, value)s."""
    if ":" in host:
        host = "[" + host + "]"
    if port != (443 if secure else 80):
        host = "%s:%d" % (host, port)
    req = ("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host, key))
    if subprotocols:
        req += "Sec-WebSocket-Protocol: %s\r\n" % ", ".join(subprotocols)
    if headers:
        for name, value in headers.items() if hasattr(headers, "items") else headers:
            if "\r" in name or "\n" in name or "\r" in value or "\n" in value:
                raise WSError("header %r contains a line break" % name)
            req += "%s: %s\r\n" % (name, value)
    return (req + "\r\n").encode()


def split_response(buf):
    """Return the length of the response head (up to and including the blank line) if the
    buffer holds all of it, else -1. Raises HandshakeError if it grows past 4096 bytes (what
    we are willing to buffer)."""
    i = bytes(buf).find(b"\r\n\r\n")
    if i >= 0:
        return i + 4
    if len(buf) > 4096:
        raise HandshakeError(None, "response head over 4096 bytes")
    return -1


def _has_token(value, token):
    # a comma-separated header value (any case) holds token
    for t in value.split(","):
        if t.strip().lower() == token:
            return True
    return False


def check_response(head, key, subprotocols=None):
    """Check the server's response head (bytes) against §4.1's rules for the client.
    Returns the subprotocol the server chose (or None). Raises HandshakeError."""
    try:
        text = bytes(head).decode()
    except UnicodeError:
        raise HandshakeError(None, "response is not text")
    lines = text.split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/1.") \
            or not status_line[1].isdigit():
        raise HandshakeError(None, "bad status line: %r" % lines[0][:60])
    status = int(status_line[1])
    if status != 101:
        raise HandshakeError(status, status_line[2] if len(status_line) > 2 else "")
    hdrs = {}  # type: dict[str, str]
    for line in lines[1:]:
        if not line:
            continue
        k = line.find(":")
        if k <= 0:
            raise HandshakeError(101, "bad header line: %r" % line[:60])
        name = line[:k].strip().lower()
        value = line[k + 1:].strip()
        # Repeated headers combine into one comma-separated list (RFC 9110 §5.3).
        hdrs[name] = hdrs[name] + ", " + value if name in hdrs else value
    if not _has_token(hdrs.get("upgrade", ""), "websocket"):
        raise HandshakeError(101, "no Upgrade: websocket")
    if not _has_token(hdrs.get("connection", ""), "upgrade"):
        raise HandshakeError(101, "no Connection: Upgrade")
    if hdrs.get("sec-websocket-accept") != accept_for(key):
        raise HandshakeError(101, "wrong Sec-WebSocket-Accept")
    if "sec-websocket-extensions" in hdrs:
        raise HandshakeError(101, "extension not offered")
    proto = hdrs.get("sec-websocket-protocol")
    if proto is not None:
        if not subprotocols or proto not in subprotocols:
            raise HandshakeError(101, "subprotocol not offered: %s" % proto)
    return proto
