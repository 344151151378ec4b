"""A client WebSocket connection's state, without I/O (RFC 6455 §5-§7): bytes from the server
in, events out; frames to send out. Reassembles fragmented messages (control frames may be
interleaved, §5.4), validates text as UTF-8, answers pings, runs the close handshake and
fails the connection (§7.1.7) with the right close code on any violation.

Events are (opcode, value) pairs, named by the frame that made them (frames.OP_*; plain
tuples: on MicroPython every class costs a few hundred bytes of heap):
  (OP_TEXT, str) / (OP_BINARY, bytes)   a complete data message
  (OP_PING, bytes) / (OP_PONG, bytes)   a ping (already answered) / a pong, with its payload
  (OP_CLOSE, (code, reason))            the server's close frame: code 1005 if it had none
"""

import os

try:
    from micropython import const
except ImportError:  # CPython
    const = lambda x: x  # noqa: E731

from .utf8 import check as _utf8_check
from .errors import ConnectionClosed, ProtocolError
from .frames import Decoder, Encoder

# Connection states (§4.1 -> OPEN after the handshake; §7 closing).
# Opcodes (§5.2; frames.OP_*), compile-time constants here
_CONT = const(0x0)
_TEXT = const(0x1)
_BINARY = const(0x2)
_CLOSE = const(0x8)
_PING = const(0x9)
_PONG = const(0xA)
OPEN = const(1)
CLOSING = const(2)   # we sent a close frame and wait for the server's
CLOSED = const(3)    # close frames exchanged, or the connection failed


def close_code_ok(code):
    """§7.4.1/§7.4.2: codes an endpoint may put in a close frame. 1004-1006 and 1015 are
    reserved; 1012-1014 are IANA-registered since; 3000-4999 belong to libraries and apps."""
    return (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999)


class Protocol:
    """enc: an Encoder to frame with (a finished connection's, reused: its buffer and key
    pool); None makes one from randbytes and send_buffer."""

    def __init__(self, max_message=16384, randbytes=os.urandom, send_buffer=512, enc=None):
        self.state = OPEN
        self.max_message = max_message
        self.close_code = None      # from the server's close frame, or our failure code
        self.close_reason = ""
        self.sent_code = None       # the code of the close frame we sent
        self.failure = None         # the ProtocolError if we failed the connection
        self.enc = enc if enc is not None else Encoder(randbytes, send_buffer)
        self._dec = Decoder(max_message)
        # Events and control frames are collected in one list / buffer while the other one
        # is with the caller (events_received(), data_to_send()); the two swap at each call
        # and are emptied, never replaced: a keepalive ping and its pong every second
        # allocate nothing that stays.
        self._events = []
        self._ev2 = []
        self._out = bytearray()     # control frames waiting to be written
        self._out2 = bytearray()
        self._op = None             # opcode of the message being reassembled
        self._parts = None          # its fragments so far (bytearray) if more than one
        self._first = None          # its first fragment (bytes) while it is the only one
        self._u8 = 0                # UTF-8 validator state across text fragments
        self._pre = 0               # bytes of the incomplete text frame checked (_on_part)
        self._dec.on_part = self._on_part

    # --- receiving -------------------------------------------------------------------------
    def receive_data(self, data):
        """Feed bytes from the server. Raises ProtocolError after failing the connection (the
        close frame to send is then in data_to_send())."""
        m = self.receive_message(data)
        if m is not None:
            self._events.append((_TEXT if isinstance(m, str) else _BINARY, m))

    def receive_message(self, data):
        """receive_data(), except that when data is exactly one whole message (one final
        text or binary frame, nothing half-parsed before it) that message is returned (str
        or bytes) instead of queued as an event. Otherwise returns None."""
        if self.state == CLOSED:
            return None  # §7.1.1: nothing after the closing handshake or a failure matters
        # Fast path, as in a request/response exchange: one whole unmasked frame, 7- or
        # 16-bit length, within max_message. Anything else, including text that is not
        # valid UTF-8, takes the general path below, which checks every rule.
        n = len(data)
        if n >= 2 and self._op is None and self._dec._buf is None and self.state == OPEN:
            b0 = data[0]
            if b0 == 0x81 or b0 == 0x82:
                m = data[1]
                h = 2
                if m == 126 and n >= 4:
                    m = (data[2] << 8) | data[3]
                    h = 4
                elif m > 126:
                    m = -1  # masked (§5.1) or a 64-bit length: the general path decides
                if h + m == n and m <= self.max_message:
                    pay = memoryview(data)[h:]
                    if b0 == 0x82:
                        return bytes(pay)
                    # (viper takes a memoryview for ptr8; the stubs cannot say so)
                    if _utf8_check(0, pay, m) == 0:  # type: ignore[arg-type]
                        return str(pay, "utf-8")
        try:
            self._dec.feed(data, self._on_frame)
        except ProtocolError as e:
            self.fail(e.code, e.reason, e)
            raise e
        return None

    def events_received(self):
        """The events since the last call, as a list that this Protocol reuses: valid until
        the next events_received() or receive_*() call (iterate or copy it before then)."""
        ev = self._events
        if ev:
            nxt = self._ev2
            del nxt[:]  # what the previous call returned: its caller is done with it
            self._events, self._ev2 = nxt, ev
        return ev

    def data_to_send(self):
        """The control frames queued since the last call (pongs, close frames), as a
        bytearray that this Protocol reuses: valid until the next call of any method of this
        Protocol (write or copy it before then). Empty if none."""
        out = self._out
        if out:
            nxt = self._out2
            nxt[:] = b""  # what the previous call returned is written (keeps its capacity)
            self._out, self._out2 = nxt, out
        return out

    def _on_frame(self, fin, op, payload):
        if self.state == CLOSED:
            return
        if op >= _CLOSE:
            if op == _CLOSE:
                self._on_close(payload)
                return
            p = bytes(payload)
            self._events.append((op, p))  # a ping or a pong
            if op == _PING and self.state == OPEN:
                self._queue(_PONG, p)   # §5.5.3: a pong echoes the ping's payload
            return
        if op == _CONT:
            if self._op is None:
                raise ProtocolError(1002, "continuation frame without a message to continue")
        else:
            if self._op is not None:
                raise ProtocolError(1002, "new message before the previous one finished")
            self._op = op
            if not self._pre:
                self._u8 = 0
        n = len(payload)
        if self._op == _TEXT:
            pre = self._pre
            if pre:  # its first bytes were checked as they arrived
                self._pre = 0
                self._u8 = _utf8_check(self._u8, payload[pre:], n - pre)
            else:
                self._u8 = _utf8_check(self._u8, payload, n)
            if self._u8 < 0:
                raise ProtocolError(1007, "invalid UTF-8 in a text message")
        if not fin:
            # Keep fragments; the decoder checks the next one against what is left (§5.4).
            if self._parts is not None:
                self._parts.extend(payload)
            elif self._first is None:
                self._first = bytes(payload)
            else:
                self._parts = bytearray(self._first)
                self._parts.extend(payload)
                self._first = None
            kept = self._parts if self._parts is not None else self._first  # (one is set)
            self._dec.max_size = self.max_message - len(kept)  # type: ignore[arg-type]
            return
        if self._parts is not None:
            self._parts.extend(payload)
            data = self._parts
        elif self._first is not None:
            data = self._first + bytes(payload)
        else:
            data = payload
        if self._op == _TEXT:
            if self._u8 != 0:
                raise ProtocolError(1007, "text message ends inside a UTF-8 sequence")
            msg = str(data, "utf-8")  # type: str | bytes
        else:
            msg = bytes(data)
        self._events.append((self._op, msg))
        self._op = self._parts = self._first = None
        self._dec.max_size = self.max_message

    def _on_part(self, op, chunk):
        # Payload of a text frame still arriving (§8.1): fail as soon as a bad byte is in,
        # not when the frame completes. Frames out of order are left to _on_frame (1002).
        if op == _TEXT:
            if self._op is not None:
                return
            if not self._pre:
                self._u8 = 0
        elif op != _CONT or self._op != _TEXT:
            return
        n = len(chunk)
        self._u8 = _utf8_check(self._u8, chunk, n)
        self._pre += n
        if self._u8 < 0:
            raise ProtocolError(1007, "invalid UTF-8 in a text message")

    def _on_close(self, payload):
        # §5.5.1: an optional 2-byte code, then an optional UTF-8 reason.
        n = len(payload)
        if n == 1:
            raise ProtocolError(1002, "close frame with a 1-byte payload")
        if n == 0:
            code, reason = 1005, ""
        else:
            code = (payload[0] << 8) | payload[1]
            if not close_code_ok(code):
                raise ProtocolError(1002, "invalid close code %d" % code)
            if _utf8_check(0, payload[2:], n - 2) != 0:
                raise ProtocolError(1007, "close reason is not UTF-8")
            reason = str(bytes(payload[2:]), "utf-8")
        if self.state == OPEN:
            # §5.5.1: echo the status code we received.
            self._queue(_CLOSE, payload[:2])
        self.state = CLOSED
        self._dec.stop()  # §7.1.1: nothing after the close frame counts
        self.close_code, self.close_reason = code, reason
        self._events.append((_CLOSE, (code, reason)))

    # --- sending ---------------------------------------------------------------------------
    def send_message(self, data, text=False, n=-1):
        """Frame a message into enc.out; return its length. str -> text, else binary; with
        text=True a bytes-like is framed as text: UTF-8 the caller vouches for (§5.6: a text
        frame's payload must be valid UTF-8; not re-checked here). n >= 0: only the first n
        bytes of a bytes-like (no slice of it to make)."""
        if self.state != OPEN:
            raise self.closed_error()
        if isinstance(data, str):
            return self.enc.encode_text(data)  # MicroPython: no encoded copy of the str
        return self.enc.encode(_TEXT if text else _BINARY, data, len(data) if n < 0 else n)

    def send_ping(self, payload=b""):
        if self.state != OPEN:
            raise self.closed_error()
        if len(payload) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._queue(_PING, payload)

    def send_close(self, code=1000, reason=""):
        """Start the closing handshake (§7.1.2): queue our close frame, wait for theirs."""
        if self.state != OPEN:
            return
        if not close_code_ok(code):
            raise ValueError("close code %d may not be sent" % code)
        r = reason.encode()
        if len(r) > 123:
            raise ValueError("close reason over 123 bytes")
        self._queue(_CLOSE, bytes((code >> 8, code & 0xFF)) + r)
        self.state = CLOSING
        self.sent_code = code

    def fail(self, code, reason, exc=None):
        """§7.1.7 Fail the WebSocket Connection: send a close frame with `code` (unless one
        was already sent) and stop processing anything the server sends."""
        if self.state == OPEN:
            r = reason.encode()
            if len(r) > 123:
                # §5.5: 125 bytes of control payload, 2 of them the code; §5.5.1: the reason
                # is UTF-8, so cut before the character that does not fit whole (back over
                # its continuation bytes, 10xxxxxx)
                k = 123
                while r[k] & 0xC0 == 0x80:
                    k -= 1
                r = r[:k]
            self._queue(_CLOSE, bytes((code >> 8, code & 0xFF)) + r)
            self.sent_code = code
        self.state = CLOSED
        self._dec.stop()
        self.close_code, self.close_reason = code, reason
        self.failure = exc or ProtocolError(code, reason)

    def closed_error(self):
        """The exception that tells a caller why the connection is no longer open."""
        if self.failure is not None:
            return self.failure
        if self.close_code is not None:
            return ConnectionClosed(self.close_code, self.close_reason)
        if self.sent_code is not None:
            return ConnectionClosed(self.sent_code, "closing")
        return ConnectionClosed(1006, "connection lost")

    def _queue(self, op, payload):
        n = self.enc.encode(op, payload, len(payload))
        self._out.extend(memoryview(self.enc.out)[:n])
