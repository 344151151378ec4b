"""Install the Debian packages the test suite needs: headless Chromium (the dashboard test) and
PostgreSQL (the store suite runs on it too; tools/fieldlink_tools/temp_postgres.py starts one),
HAProxy (in front of several collectors: tools/fieldlink_tools/haproxy.py).

Runs before the suite in `make test`. It only acts when a package is missing and we are root
with apt-get available (CI and the dev machines); elsewhere it says what to install.
"""
import glob
import os
import shutil
import subprocess
import sys


def _installed(cmd):
    # PostgreSQL puts no command on PATH: its binaries live in /usr/lib/postgresql/N/bin.
    return (shutil.which(cmd) is not None or os.access("/usr/sbin/" + cmd, os.X_OK)
            or bool(glob.glob("/usr/lib/postgresql/*/bin/%s" % cmd)))


# command -> Debian package (haproxy: the several-collectors tests put it in front)
NEEDED = {"chromium": "chromium", "initdb": "postgresql", "haproxy": "haproxy"}


def main():
    missing = [pkg for cmd, pkg in NEEDED.items() if not _installed(cmd)]
    if not missing:
        return 0
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("fieldlink: please install Debian packages: " + " ".join(missing), file=sys.stderr)
        return 0
    print("fieldlink: installing " + " ".join(missing) + " with apt-get", flush=True)
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
