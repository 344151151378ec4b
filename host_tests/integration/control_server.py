"""A small server for the control tests speaking the protocol with its control additions
(docs/protocol.md "Control"): welcome, then `desired` full; acks every batch; records every
`reported`; `set()` makes a new desired record (ver + 1) and sends it to a connected device.
`offline()` drops the device and refuses it until `online()`. Independent of the collector (its
control support is built elsewhere), on websockets in a background thread, 127.0.0.1 only."""
import asyncio
import json
import threading
import time

from ws_support import websockets_server

SUBPROTOCOL = "fieldlink.v1"


class ControlServer:
    def __init__(self):
        self._lock = threading.Lock()
        self.desired = {}       # output -> record (with its ver)
        self.reported = []      # every reported message's "out", in order of arrival
        self.state = {}         # output -> the last reported entry
        self.ack = 0
        self.welcomes = 0
        self.refused = 0        # connections refused while offline
        self._accept = True
        self._conns = set()
        self._lt = websockets_server(self._handler, subprotocols=[SUBPROTOCOL])

    def __enter__(self):
        self._lt.__enter__()
        self.url = "ws://127.0.0.1:%d/ws" % self._lt.port
        return self

    def __exit__(self, *exc):
        self._lt.__exit__(*exc)

    # ---- the test's side ----

    def set(self, name, **rec):
        """A new desired record for `name` (v=..., rule=...): its ver is one more than the
        last; sent at once if the device is connected. Returns the record."""
        with self._lock:
            ver = self.desired.get(name, {}).get("ver", 0) + 1
            r = dict(rec)
            r["ver"] = ver
            self.desired[name] = r
        self._send_all({"t": "desired", "out": {name: r}, "full": False})
        return r

    def send_raw(self, msg):
        self._send_all(msg)

    def offline(self):
        """Drop the device's connection and refuse new ones."""
        self._accept = False
        self._lt.loop.call_soon_threadsafe(self._close_all)

    def online(self):
        self._accept = True

    def forget(self):
        """Forget what was reported so far (wait_state then sees only what comes next)."""
        with self._lock:
            self.state = {}

    def connected(self):
        return bool(self._conns)

    def wait(self, pred, timeout, what):
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                got = pred(self)
            if got:
                return got
            if time.monotonic() > deadline:
                raise AssertionError("timed out waiting for %s; reported: %r"
                                     % (what, self.reported[-5:]))
            time.sleep(0.05)

    def wait_state(self, name, timeout=30, **want):
        """The last reported entry of `name` once it has every field in `want`."""
        def ok(s):
            e = s.state.get(name)
            return e if e is not None and all(e.get(k) == v for k, v in want.items()) \
                else None
        return self.wait(ok, timeout, "%s reported as %r" % (name, want))

    # ---- the server ----

    def _send_all(self, msg):
        text = json.dumps(msg)

        def go():
            for ws in list(self._conns):
                asyncio.ensure_future(ws.send(text))
        self._lt.loop.call_soon_threadsafe(go)

    def _close_all(self):
        for ws in list(self._conns):
            asyncio.ensure_future(ws.close(1001, "offline"))

    async def _handler(self, ws):
        if not self._accept:
            self.refused += 1
            await ws.close(1013, "offline")
            return
        hello = json.loads(await ws.recv())
        assert hello["t"] == "hello", hello
        await ws.send(json.dumps({"t": "welcome", "v": 1, "ack": self.ack,
                                  "time": time.time()}))
        with self._lock:
            full = {"t": "desired", "out": dict(self.desired), "full": True}
            self.welcomes += 1
        await ws.send(json.dumps(full))
        self._conns.add(ws)
        try:
            async for m in ws:
                obj = json.loads(m)
                t = obj.get("t")
                if t == "batch":
                    self.ack = max(self.ack, max(r["q"] for r in obj["r"]))
                    await ws.send(json.dumps({"t": "ack", "ack": self.ack}))
                elif t == "gap":
                    self.ack = max(self.ack, obj["to"])
                    await ws.send(json.dumps({"t": "ack", "ack": self.ack}))
                elif t == "reported":
                    with self._lock:
                        self.reported.append(obj["out"])
                        self.state.update(obj["out"])
        except Exception:
            pass
        finally:
            self._conns.discard(ws)
