"""A throwaway PostgreSQL server for tests and benchmarks: Debian's `postgresql` binaries
(`initdb`, `postgres` under /usr/lib/postgresql/N/bin, not on PATH), a fresh cluster in a
temporary directory, run as an unprivileged user (PostgreSQL refuses to run as root), removed
at the end.

    with TempPostgres() as pg:
        pg.create_database("t1")
        pg.dsn("t1")          # unix socket in the temp dir, no password (only its owner reaches it)
        pg.url("t1")          # postgresql://fieldlink@127.0.0.1:PORT/t1, password: pg.password_file
        pg.restart()          # or pg.stop(mode="immediate"); pg.start(): a crash and recovery

The unix socket lives in the cluster's own 0700 directory, so `trust` there reaches only its
owner (and root); TCP on 127.0.0.1 needs the generated password (scram-sha-256). fsync and
synchronous_commit stay on: the tests check durability, not a faster imitation of it.
"""
import ctypes
import glob
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time

SUPERUSER = "fieldlink"
_PR_SET_PDEATHSIG = 1


class PostgresUnavailable(RuntimeError):
    """PostgreSQL is not installed (or cannot be run) on this machine."""


def find_bindir():
    """The newest /usr/lib/postgresql/N/bin holding initdb and postgres, or None."""
    found = []
    for initdb in glob.glob("/usr/lib/postgresql/*/bin/initdb"):
        bindir = os.path.dirname(initdb)
        version = os.path.basename(os.path.dirname(bindir))
        if os.access(initdb, os.X_OK) and os.access(os.path.join(bindir, "postgres"), os.X_OK):
            found.append((int(version) if version.isdigit() else 0, bindir))
    return max(found)[1] if found else None


def _tail(path, n=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-n:])
    except OSError:
        return ""


class TempPostgres:
    def __init__(self, bindir=None, run_as="nobody", timeout=60, parent=None):
        self.bindir = bindir or find_bindir()
        if self.bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb): install the "
                "Debian package postgresql (tools/ensure_system_deps.py does, as root)")
        self.timeout = timeout     # every wait (initdb, start, stop) is bounded by this
        # As root the server runs as `run_as`; otherwise as ourselves.
        self._ids = None
        if os.geteuid() == 0:
            pw = pwd.getpwnam(run_as)
            self._ids = (pw.pw_uid, pw.pw_gid)
        # Not under pytest's tmp_path: that is 0700 root, which `nobody` cannot enter.
        self.base = tempfile.mkdtemp(prefix="fieldlink-pg-", dir=parent)
        self.data = os.path.join(self.base, "data")
        self.socket_dir = self.base
        self.log_path = os.path.join(self.base, "postgres.log")
        self.password = secrets.token_urlsafe(24)
        self.password_file = os.path.join(self.base, "password")
        self.port = None
        self.proc = None
        self._initdb()

    # -- life ----------------------------------------------------------------------------

    def _preexec(self):
        if self._ids is not None:
            os.setgroups([])
            os.setgid(self._ids[1])
            os.setuid(self._ids[0])
        # The server dies with the process that started it (also when that one is killed),
        # so no orphan postgres outlives a test run. Set after setuid, which clears it.
        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGQUIT)
        except (OSError, AttributeError):
            pass

    def _own(self, path):
        if self._ids is not None:
            os.chown(path, *self._ids)

    def _initdb(self):
        os.chmod(self.base, 0o700)
        self._own(self.base)
        pwfile = os.path.join(self.base, "initdb.pw")
        with open(pwfile, "w") as f:
            f.write(self.password + "\n")
        self._own(pwfile)
        with open(self.password_file, "w") as f:   # for clients (read by the test process)
            f.write(self.password + "\n")
        argv = [os.path.join(self.bindir, "initdb"), "-D", self.data, "-U", SUPERUSER,
                "--pwfile", pwfile, "--auth-local=trust", "--auth-host=scram-sha-256",
                "-E", "UTF8", "--locale=C",
                # the cluster is thrown away: no fsync while creating it (the server fsyncs)
                "--no-sync"]
        try:
            out = subprocess.run(argv, preexec_fn=self._preexec, cwd=self.base,
                                 env=self._env(), stdin=subprocess.DEVNULL,
                                 capture_output=True, text=True, timeout=self.timeout)
        except (OSError, subprocess.TimeoutExpired) as e:
            self.remove()
            raise PostgresUnavailable("initdb failed: %s" % e) from e
        finally:
            if os.path.exists(pwfile):
                os.unlink(pwfile)
        if out.returncode != 0:
            self.remove()
            raise PostgresUnavailable("initdb failed (%d): %s" % (out.returncode,
                                                                 out.stderr[-2000:]))
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# fieldlink tests\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "unix_socket_directories = '%s'\n"
                    "fsync = on\n"
                    "synchronous_commit = on\n"
                    "max_connections = 50\n"
                    "shared_buffers = 32MB\n"
                    "logging_collector = off\n" % self.socket_dir)

    def _env(self):
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env.update(LANG="C", LC_ALL="C")
        return env

    def start(self):
        """Start the server and wait (bounded) until it accepts connections. The first start
        picks a free port; later ones reuse it, so clients reconnect to the same address."""
        assert self.proc is None or self.proc.poll() is not None, "already running"
        for attempt in range(5):
            port = self.port or self._free_port()
            log = open(self.log_path, "ab")
            try:
                self.proc = subprocess.Popen(
                    [os.path.join(self.bindir, "postgres"), "-D", self.data, "-p", str(port)],
                    preexec_fn=self._preexec, cwd=self.base, env=self._env(),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
            finally:
                log.close()
            if self._wait_ready(port):
                self.port = port
                return self
            # Most often: another process took the port between our probe and the bind.
            self.proc.wait(self.timeout)
            if "could not bind" not in _tail(self.log_path) and "in use" not in _tail(
                    self.log_path):
                break
            time.sleep(0.2 * (attempt + 1))
        raise PostgresUnavailable("postgres did not start; log:\n" + _tail(self.log_path))

    @staticmethod
    def _free_port():
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]

    def _wait_ready(self, port):
        import psycopg
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                psycopg.connect(host=self.socket_dir, port=port, user=SUPERUSER,
                                dbname="postgres", connect_timeout=5).close()
                return True
            except psycopg.OperationalError:
                time.sleep(0.05)
        self.stop("immediate")
        raise PostgresUnavailable("postgres not ready within %ss; log:\n%s"
                                  % (self.timeout, _tail(self.log_path)))

    def stop(self, mode="fast"):
        """Stop the server: `fast` (clients disconnected, checkpoint), or `immediate` (no
        checkpoint, like a crash: the next start recovers from the WAL). Bounded: SIGKILL
        when it does not exit in time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal({"fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode])
        try:
            self.proc.wait(self.timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(self.timeout)

    def restart(self, mode="fast"):
        self.stop(mode)
        return self.start()

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def remove(self):
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self):
        return self.start() if not self.running else self

    def __exit__(self, *exc):
        self.remove()

    # -- using it ------------------------------------------------------------------------

    def dsn(self, dbname="postgres"):
        """A libpq URL over the unix socket (no password needed)."""
        return "postgresql://%s@/%s?host=%s&port=%d" % (SUPERUSER, dbname, self.socket_dir,
                                                       self.port)

    def url(self, dbname="postgres"):
        """A libpq URL over TCP to 127.0.0.1, without the password (see password_file)."""
        return "postgresql://%s@127.0.0.1:%d/%s" % (SUPERUSER, self.port, dbname)

    def connect(self, dbname="postgres"):
        import psycopg
        return psycopg.connect(self.dsn(dbname), autocommit=True, connect_timeout=10)

    def create_database(self, name):
        """A new empty database (name: letters, digits, _)."""
        if not name.replace("_", "").isalnum():
            raise ValueError("database name: letters, digits and _ only: %r" % name)
        with self.connect() as c:
            c.execute('CREATE DATABASE "%s"' % name)
        return name

    def drop_database(self, name):
        if not name.replace("_", "").isalnum():
            raise ValueError("database name: letters, digits and _ only: %r" % name)
        with self.connect() as c:
            c.execute('DROP DATABASE IF EXISTS "%s" WITH (FORCE)' % name)
