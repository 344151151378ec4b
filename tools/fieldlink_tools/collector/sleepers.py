"""Duty-cycled devices (docs/protocol.md "Duty cycling"): a device that said `sleep` before
closing is "sleeping until T", not offline, and commands sent to it wait in a bounded queue of
its own until its next welcome, or expire.

Kept in the collector's memory: a collector restart forgets who sleeps (such a device shows
offline until it wakes) and the queued commands (their expiry replies never come)."""
import logging
import time

from . import messages as M

log = logging.getLogger("fieldlink.collector")

MAX_QUEUED = 16            # commands waiting per sleeping device
MAX_SLEEPING = 100000      # devices remembered as sleeping (bounded like everything else)
DEFAULT_TTL = 24 * 3600    # s a queued command waits for the device at most, unless told
MAX_TTL = 7 * 24 * 3600
QUEUED_PREFIX = "q"        # ids of queued commands (a reply to one has no waiter)
LATE_S = 60                # a device this long past its wake time shows as overdue


class QueueFull(Exception):
    pass


class Sleepers:
    def __init__(self, clock=time.time, max_queued=MAX_QUEUED, max_sleeping=MAX_SLEEPING):
        self._clock = clock
        self.max_queued = max_queued
        self.max_sleeping = max_sleeping
        self._until = {}      # device -> Unix time it said it wakes
        self._queues = {}     # device -> [(id, cmd, args, expires)], oldest first

    def asleep(self, dev, wake_s):
        """The device said `sleep`: its wake time."""
        if dev not in self._until and len(self._until) >= self.max_sleeping:
            # the oldest mark goes (dicts keep insertion order): it is the stalest
            self._until.pop(next(iter(self._until)))
        until = self._clock() + wake_s
        self._until.pop(dev, None)
        self._until[dev] = until
        return until

    def awake(self, dev):
        """The device connected (hello): no longer sleeping."""
        self._until.pop(dev, None)

    def until(self, dev):
        return self._until.get(dev)

    def state(self, dev, connected):
        """"online", "sleeping", "overdue" (slept past its wake time) or "offline"."""
        if connected:
            return "online"
        t = self._until.get(dev)
        if t is None:
            return "offline"
        return "sleeping" if self._clock() <= t + LATE_S else "overdue"

    def queue(self, dev, cid, cmd, args, ttl=None):
        """Keep a command for the sleeping device's next welcome; its expiry time. QueueFull
        when its queue holds max_queued already (nothing is dropped silently)."""
        ttl = DEFAULT_TTL if ttl is None else max(1.0, min(float(ttl), MAX_TTL))
        q = self._queues.setdefault(dev, [])
        if len(q) >= self.max_queued:
            raise QueueFull("%s: %d commands queued already" % (dev, len(q)))
        exp = self._clock() + ttl
        q.append((cid, cmd, args, exp))
        return exp

    def queued(self, dev):
        return [{"id": c, "cmd": m, "expires": e} for c, m, _, e in self._queues.get(dev, ())]

    def take(self, dev):
        """(due, expired): the commands to deliver now (the device is awake), and those whose
        time ran out; the queue is emptied."""
        now = self._clock()
        due, expired = [], []
        for item in self._queues.pop(dev, ()):
            (due if item[3] >= now else expired).append(item)
        return due, expired

    def expire(self):
        """Every queued command whose time ran out, removed: [(dev, id, cmd)]."""
        now = self._clock()
        out = []
        for dev in list(self._queues):
            keep = []
            for item in self._queues[dev]:
                if item[3] < now:
                    out.append((dev, item[0], item[1]))
                else:
                    keep.append(item)
            if keep:
                self._queues[dev] = keep
            else:
                del self._queues[dev]
        return out


class DutyCycling:
    """The Collector's part for duty-cycled devices (a base class of Collector: it uses the
    collector's sleepers, _publish and _cmd_ids)."""

    def _on_sleep(self, s, m):
        until = self.sleepers.asleep(s.dev, m["wake_s"])
        log.info("%s: sleeping for %ss", s.dev, m["wake_s"])
        self._publish({"t": "sleeping", "dev": s.dev, "until": until, "time": time.time()})

    def _queue_command(self, req):
        dev, cmd, args = req["dev"], req["cmd"], req.get("args") or {}
        if not isinstance(cmd, str) or not isinstance(args, dict):
            return {"ok": False, "error": "cmd: a string, args: an object"}
        cid = "%s%d" % (QUEUED_PREFIX, next(self._cmd_ids))
        try:
            exp = self.sleepers.queue(dev, cid, cmd, args, req.get("ttl"))
        except QueueFull as e:
            return {"ok": False, "error": "queue full: %s" % e}
        return {"ok": True, "queued": {"id": cid, "expires": exp,
                                       "sleeping_until": self.sleepers.until(dev)}}

    async def _deliver_queued(self, s):
        self.sleepers.awake(s.dev)
        due, expired = self.sleepers.take(s.dev)
        for cid, cmd, _, _ in expired:
            self._expired(s.dev, cid, cmd)
        for cid, cmd, args, _ in due:
            log.info("%s: delivering queued command %s (%s)", s.dev, cid, M.printable(cmd[:32]))
            await s.ws.send(M.dumps({"t": "cmd", "id": cid, "cmd": cmd, "args": args}))

    def _expire_queued(self):
        for dev, cid, cmd in self.sleepers.expire():
            self._expired(dev, cid, cmd)

    def _expired(self, dev, cid, cmd):
        log.info("%s: queued command %s expired before the device woke", dev, cid)
        self._publish({"t": "reply", "dev": dev, "reply": {
            "id": cid, "ok": False, "err": "expired: the device did not wake in time"},
            "time": time.time()})
