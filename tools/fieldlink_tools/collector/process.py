"""Run `fieldlink server` as a real subprocess, for tests, the demo and soak scripts:
start on port 0, parse the URL it prints, restart on the same port, kill it, read its store.

    with CollectorProcess(tmp_path / "c.db", {"dev-1": "tok"}) as c:
        ...  # c.url, c.store().readings("dev-1"), c.restart(), c.command("dev-1", "sample_now")
"""
import json
import os
import queue
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time

from .dburl import is_postgres, open_store

_LISTEN = re.compile(r"^fieldlink server: listening on (wss?)://([^:/]+):(\d+)/ws")


class CollectorProcess:
    def __init__(self, db_path, devices, host="127.0.0.1", port=0, cert=None, key=None,
                 extra_args=(), print_readings=False, env=None, log_path=None, workdir=None):
        # db_path: a SQLite file, or a postgresql:// URL (its side files then go in workdir)
        self.db_path = str(db_path)
        if is_postgres(self.db_path):
            workdir = workdir or tempfile.mkdtemp(prefix="fieldlink-collector-")
            self._side = os.path.join(str(workdir), "collector")
        else:
            self._side = self.db_path
        self.devices = dict(devices)
        self.host = host
        self.port = port
        self.cert = cert
        self.key = key
        self.extra_args = list(extra_args)
        self.print_readings = print_readings
        self.admin_token = secrets.token_hex(16)
        self.viewer_token = secrets.token_hex(16)
        self.viewer_token_path = self._side + ".viewer-token"   # for a person to log in
        self.env = env
        # stderr (the server's log) goes to a file so a test can show it when it fails.
        self.log_path = str(log_path or (self._side + ".log"))
        self.proc = None
        self.url = None
        self.lines = queue.Queue()     # stdout lines after the listening line
        self._reader = None

    # -- life ----------------------------------------------------------------------------

    def argv(self):
        devfile = self._side + ".devices.json"
        _write_secret(devfile, json.dumps(self.devices))
        _write_secret(self.viewer_token_path, self.viewer_token + "\n")
        # Tokens come from files and the environment ($FIELDLINK_ADMIN_TOKEN), never the
        # command line, where every local user can read them (ps, /proc/PID/cmdline).
        argv = [sys.executable, "-m", "fieldlink_tools.cli", "server", "--host", self.host,
                "--port", str(self.port), "--db", self.db_path, "--devices", devfile,
                "--viewer-token-file", self.viewer_token_path]
        if self.cert:
            argv += ["--cert", str(self.cert), "--key", str(self.key)]
        if self.print_readings:
            argv.append("--print-readings")
        return argv + self.extra_args

    def start(self, timeout=30):
        """Start and wait until it listens; later starts reuse the first port (so devices
        reconnect to the same URL)."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        log = open(self.log_path, "ab")
        env = dict(os.environ if self.env is None else self.env, PYTHONUNBUFFERED="1",
                   FIELDLINK_ADMIN_TOKEN=self.admin_token)
        self.proc = subprocess.Popen(self.argv(), stdout=subprocess.PIPE, stderr=log,
                                     stdin=subprocess.DEVNULL, env=env, text=True)
        log.close()
        first = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(self.proc, first), daemon=True)
        self._reader.start()
        try:
            line = first.get(timeout=timeout)
        except queue.Empty:
            self.kill()
            raise RuntimeError("fieldlink server did not start within %ss; log:\n%s"
                               % (timeout, self.log()))
        m = _LISTEN.match(line or "")
        if not m:
            self.kill()
            raise RuntimeError("fieldlink server failed to start: %r; log:\n%s"
                               % (line, self.log()))
        self.port = int(m.group(3))
        self.url = "%s://%s:%d/ws" % (m.group(1), m.group(2), self.port)
        return self

    def _read(self, proc, first):
        told = False
        for line in proc.stdout:
            line = line.rstrip("\n")
            if not told:
                first.put(line)
                told = True
            else:
                self.lines.put(line)
        if not told:
            first.put(None)

    @property
    def http_url(self):
        return self.url.replace("wss://", "https://").replace("ws://", "http://")[:-2]

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM (clean: devices get close 1001), then SIGKILL if it hangs. Returns the
        exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._join()
        return self.proc.returncode

    def kill(self):
        """SIGKILL: a crash, no goodbye to the devices."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._join()

    def restart(self, kill=False, timeout=30):
        (self.kill if kill else self.stop)()
        return self.start(timeout)

    def _join(self):
        if self.proc is not None and self.proc.stdout:
            if self._reader is not None:
                self._reader.join(5)
            self.proc.stdout.close()

    def __enter__(self):
        return self.start() if not self.running else self

    def __exit__(self, *exc):
        self.stop()

    def log(self):
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # -- looking inside ------------------------------------------------------------------

    def store(self):
        """A read-only view of the database (safe while the server runs). Close it after."""
        return open_store(self.db_path, readonly=True)

    def seqs(self, device):
        st = self.store()
        try:
            return [r["q"] for r in st.readings(device)]
        finally:
            st.close()

    def ack(self, device):
        st = self.store()
        try:
            return st.ack(device)
        finally:
            st.close()

    def wait_for(self, predicate, timeout=30, interval=0.05, what="condition"):
        """Poll predicate(store) until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                st = self.store()
                try:
                    got = predicate(st)
                finally:
                    st.close()
            except Exception:   # the database may not exist yet right after start
                got = None
            if got:
                return got
            if time.monotonic() > deadline:
                raise TimeoutError("waited %ss for %s" % (timeout, what))
            time.sleep(interval)

    def wait_seqs(self, device, count, timeout=30):
        """Wait until `device` has at least `count` stored readings; return their seqs."""
        return self.wait_for(lambda st: (lambda s: s if len(s) >= count else None)(
            [r["q"] for r in st.readings(device)]), timeout, what="%d readings" % count)

    def command(self, device, cmd, args=None, timeout=10):
        """Send a command to a connected device through /admin; return its reply dict.
        Raises RuntimeError with the server's reason when it fails."""
        out = self._admin({"op": "cmd", "dev": device, "cmd": cmd, "args": args or {},
                           "timeout": timeout}, timeout, timeout + 5)
        if not out.get("ok"):
            raise RuntimeError("command %s to %s failed: %s" % (cmd, device, out.get("error")))
        return out["reply"]

    def connected(self, timeout=10):
        """Device ids connected right now (through /admin)."""
        return self._admin({"op": "connected"}, timeout, timeout)["devices"]

    def _admin(self, request, open_timeout, reply_timeout):
        """One request to /admin with the admin token; the answer as a dict."""
        from websockets.sync.client import connect
        url = self.url[:-3] + "/admin"
        ssl_ctx = None
        if url.startswith("wss://"):
            import ssl
            ssl_ctx = ssl.create_default_context()
            ssl_ctx.check_hostname = False
            ssl_ctx.verify_mode = ssl.CERT_NONE   # our own test server; only commands go here
        with connect(url, additional_headers={"Authorization": "Bearer " + self.admin_token},
                     ssl=ssl_ctx, open_timeout=open_timeout) as ws:
            ws.send(json.dumps(request))
            return json.loads(ws.recv(reply_timeout))


def _write_secret(path, text):
    """Write a file only its owner can read (tokens)."""
    if os.path.exists(path):
        os.chmod(path, 0o600)   # an older run may have left it readable
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
