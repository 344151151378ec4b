"""Who may do what on the collector (docs/collector.md "Authentication"), without I/O: the
viewer and admin tokens, browser sessions behind a cookie, and the per-source limit on failed
tokens. The server's `Collector.role_of(request)` puts them together."""
import collections
import hmac
import secrets
import time

MIN_TOKEN = 16            # characters; shorter tokens are refused at startup
VIEWER, ADMIN = "viewer", "admin"
RANK = {None: 0, VIEWER: 1, ADMIN: 2}   # admin can do everything a viewer can
COOKIE = "fieldlink_session"


def check_token(what, token):
    """ValueError naming `what` unless token is None or long enough to resist guessing."""
    if token is not None and len(token) < MIN_TOKEN:
        raise ValueError("%s is %d characters; at least %d are required (e.g. `python3 -c "
                         "'import secrets; print(secrets.token_urlsafe(24))'`)"
                         % (what, len(token), MIN_TOKEN))
    return token


def same(a, b):
    """Constant-time comparison of two tokens (strings)."""
    return hmac.compare_digest(a.encode("utf-8", "surrogatepass"),
                               b.encode("utf-8", "surrogatepass"))


class Tokens:
    """The viewer and admin tokens (either may be None: that role is then unavailable)."""

    def __init__(self, viewer=None, admin=None):
        self.viewer = check_token("the viewer token", viewer)
        self.admin = check_token("the admin token", admin)
        if viewer is not None and admin is not None and same(viewer, admin):
            raise ValueError("the viewer and admin tokens must differ")

    def role(self, token):
        """The role a bearer token grants, or None. Both are compared, whatever matches."""
        is_admin = self.admin is not None and same(token, self.admin)
        is_viewer = self.viewer is not None and same(token, self.viewer)
        return ADMIN if is_admin else VIEWER if is_viewer else None


class Sessions:
    """Browser sessions: a random id (never the token) -> role, with an expiry. Bounded: when
    full, the session closest to expiry makes room."""

    def __init__(self, ttl=12 * 3600, max_sessions=1000, clock=time.monotonic):
        self.ttl = ttl
        self.max_sessions = max_sessions
        self._clock = clock
        self._by_id = collections.OrderedDict()   # id -> (role, expires), oldest first

    def create(self, role):
        while len(self._by_id) >= self.max_sessions:
            self._by_id.popitem(last=False)
        sid = secrets.token_urlsafe(32)
        self._by_id[sid] = (role, self._clock() + self.ttl)
        return sid

    def role(self, sid):
        got = self._by_id.get(sid)
        if got is None:
            return None
        if got[1] <= self._clock():
            del self._by_id[sid]
            return None
        return got[0]

    def delete(self, sid):
        self._by_id.pop(sid, None)

    def __len__(self):
        return len(self._by_id)


class FailureLimit:
    """A token bucket per source address for failed credentials: `burst` failures at once,
    then `rate` per second. A source over it is answered 429 (even with the right token, so
    guessing gains nothing) until its bucket refills. The table is bounded: the least recently
    seen sources are forgotten first."""

    def __init__(self, rate=1.0, burst=10, max_sources=10000, clock=time.monotonic):
        self.rate = rate
        self.burst = burst
        self.max_sources = max_sources
        self._clock = clock
        self._buckets = collections.OrderedDict()   # source -> (tokens, at)

    def _level(self, source):
        got = self._buckets.get(source)
        if got is None:
            return float(self.burst)
        tokens, at = got
        return min(self.burst, tokens + (self._clock() - at) * self.rate)

    def blocked(self, source):
        return self._level(source) < 1

    def failed(self, source):
        level = self._level(source)
        self._buckets[source] = (max(0.0, level - 1), self._clock())
        self._buckets.move_to_end(source)
        while len(self._buckets) > self.max_sources:
            self._buckets.popitem(last=False)

    def __len__(self):
        return len(self._buckets)


def cookie_value(headers, name=COOKIE):
    """The value of cookie `name` in the request's Cookie header(s), or None."""
    for line in headers.get_all("Cookie"):
        for part in line.split(";"):
            k, sep, v = part.strip().partition("=")
            if sep and k == name:
                return v
    return None


def set_cookie(sid, max_age, secure):
    """A Set-Cookie value for the session: not readable by scripts (HttpOnly), never sent by
    another site's requests (SameSite=Strict), only over TLS when served over TLS."""
    return "%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Strict%s" % (
        COOKIE, sid, max_age, "; Secure" if secure else "")


def clear_cookie(secure):
    return set_cookie("", 0, secure)
