"""`fieldlink server` as a real subprocess (the fixture other suites use): the CLI, restarts on
the same port, clean shutdown with 1001, the devices file, wss:// from --cert/--key."""
import json
import signal
import subprocess
import sys
import threading

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from collector_fixtures import FakeDevice


def test_subprocess_stores_and_keeps_ack_across_restart(collector_proc):
    c = collector_proc({"dev-1": "tok-1"})
    assert c.url.startswith("ws://127.0.0.1:")
    with FakeDevice(c.url, "dev-1", "tok-1") as d:
        assert d.hello(next=1) == 0
        assert d.batch(range(1, 11)) == 10
    assert c.seqs("dev-1") == list(range(1, 11))
    url = c.url
    assert c.restart().url == url           # same port: devices reconnect to the same URL
    with FakeDevice(c.url, "dev-1", "tok-1") as d:
        assert d.hello(next=11, first=5, held=6) == 10
    c.restart(kill=True)                    # a crash loses nothing acked either
    assert c.ack("dev-1") == 10
    assert c.stop() == 0                    # SIGTERM is a clean exit


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_closes_devices_with_1001(collector_proc, sig):
    c = collector_proc({"dev-1": "tok-1"})
    with FakeDevice(c.url, "dev-1", "tok-1") as d:
        d.hello()
        c.proc.send_signal(sig)
        with pytest.raises(ConnectionClosed) as e:
            d.ws.recv(30)
        assert e.value.rcvd.code == 1001
    assert c.proc.wait(30) == 0


def test_devices_file_tokens_and_disabled(collector_proc):
    c = collector_proc({"a": "tok-a", "b": {"token": "tok-b", "disabled": True}})
    for dev, tok, status in (("a", "nope", 401), ("b", "tok-b", 403), ("zz", "tok-a", 401)):
        with pytest.raises(InvalidStatus) as e:
            FakeDevice(c.url, dev, tok)
        assert e.value.response.status_code == status
    with FakeDevice(c.url, "a", "tok-a") as d:
        assert d.hello() == 0


def test_print_readings_and_commands_through_the_subprocess(collector_proc):
    c = collector_proc({"dev-1": "tok-1"}, print_readings=True)
    # the admin token reaches the server through its environment, not its command line
    with open("/proc/%d/cmdline" % c.proc.pid, "rb") as f:
        assert c.admin_token.encode() not in f.read()
    with FakeDevice(c.url, "dev-1", "tok-1") as d:
        d.hello()
        d.batch([1])
        assert c.lines.get(timeout=30).startswith("fieldlink server: dashboard at http://")
        assert c.lines.get(timeout=30) == "dev-1 #1 env.temperature = 20.01 C [up 1000ms]"
        assert c.connected() == ["dev-1"]
        out = {}

        def play():   # the device answers one command while the test waits for the reply
            m = d.recv()
            out["cmd"] = m
            d.send({"t": "reply", "id": m["id"], "ok": True, "result": 7})
        t = threading.Thread(target=play)
        t.start()
        reply = c.command("dev-1", "set_interval", {"sensor": "*", "interval_s": 7})
        t.join(30)
        assert out["cmd"]["cmd"] == "set_interval" and out["cmd"]["args"]["interval_s"] == 7
        assert reply["ok"] is True and reply["result"] == 7
    with pytest.raises(RuntimeError, match="not connected"):
        c.command("dev-1", "reboot")


def test_wss_from_cert_and_key(collector_proc, tls_files):
    c = collector_proc({"dev-1": "tok-1"}, cert=tls_files.cert, key=tls_files.key)
    assert c.url.startswith("wss://127.0.0.1:")
    with FakeDevice(c.url, "dev-1", "tok-1", ssl=tls_files.client_context()) as d:
        assert d.hello() == 0
        assert d.batch([1, 2]) == 2


def test_help_documents_every_option():
    out = subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "server", "--help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0
    for opt in ("--host", "--port", "--db", "--devices", "--cert", "--key",
                "--max-message", "--max-batch", "--max-devices", "--print-readings",
                "--admin-token-file", "--viewer-token-file", "FIELDLINK_VIEWER_TOKEN",
                "FIELDLINK_ADMIN_TOKEN", "--allowed-host", "--max-viewers", "--max-admins",
                "--sync", "--db-password-file", "postgresql://", "Bearer", "401", "403", "429", "/live"):
        assert opt in out.stdout, opt


def test_bad_arguments_fail_with_a_message(tmp_path):
    bad = tmp_path / "devices.json"
    bad.write_text(json.dumps(["not", "an", "object"]))
    for args in (["--devices", str(bad)], ["--device", "no-token"],
                 ["--cert", str(bad)]):
        out = subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", "server",
                              "--port", "0", "--db", str(tmp_path / "x.db"), *args],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and "fieldlink server:" in out.stderr, (args, out.stderr)


@pytest.mark.parametrize("case", ["bad-json", "missing-devices", "not-object", "missing-cert",
                                  "bad-cert", "db-is-dir", "db-dir-uncreatable"])
def test_bad_inputs_are_one_line_naming_the_culprit(tmp_path, capsys, case):
    """In-process (no subprocess start-up): each bad input is a return code and one line on
    stderr that names the file or option, never a traceback."""
    from fieldlink_tools import cli
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "list.json").write_text("[1, 2]")
    db = str(tmp_path / "c.db")
    args, named = {
        "bad-json": (["--devices", str(tmp_path / "bad.json")], "not valid JSON"),
        "missing-devices": (["--devices", str(tmp_path / "nope.json")], "nope.json"),
        "not-object": (["--devices", str(tmp_path / "list.json")], "expected a JSON object"),
        "missing-cert": (["--cert", str(tmp_path / "nope.pem"), "--key", str(tmp_path / "k")],
                         "nope.pem"),
        "bad-cert": (["--cert", str(tmp_path / "bad.json"), "--key", str(tmp_path / "bad.json")],
                     "--cert"),
        "db-is-dir": (["--db", str(tmp_path)], "--db"),
        "db-dir-uncreatable": (["--db", str(tmp_path / "bad.json" / "c.db")], "--db"),
    }[case]
    if "--db" not in args:
        args = ["--db", db] + args
    (tmp_path / "ok.json").write_text('{"d": "a-device-token-of-24-chars"}')
    rc = cli.main(["server", "--port", "0", "--devices", str(tmp_path / "ok.json")] + args)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = [ln for ln in err.splitlines() if ln.startswith("fieldlink server:")]
    assert len(lines) == 1 and named in lines[0], err
    assert "Traceback" not in err


@pytest.mark.parametrize("case", ["device-flag", "admin-flag", "short-env", "short-file",
                                  "same-tokens", "missing-file", "empty-file"])
def test_secrets_come_from_files_or_the_environment(tmp_path, capsys, monkeypatch, case):
    """A token on the command line is readable by every local user (ps): refused, naming the
    replacement; a token shorter than 16 characters is refused at startup."""
    from fieldlink_tools import cli
    monkeypatch.delenv("FIELDLINK_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("FIELDLINK_VIEWER_TOKEN", raising=False)
    (tmp_path / "short").write_text("abc\n")
    (tmp_path / "empty").write_text("\n")
    (tmp_path / "long").write_text("v" * 16 + "\n")
    args, env, named = {
        "device-flag": (["--device", "d=t"], {}, "--devices FILE"),
        "admin-flag": (["--admin-token", "x" * 20], {}, "--admin-token-file"),
        "short-env": ([], {"FIELDLINK_VIEWER_TOKEN": "short"}, "at least 16"),
        "short-file": (["--admin-token-file", str(tmp_path / "short")], {}, "at least 16"),
        "same-tokens": (["--viewer-token-file", str(tmp_path / "long")],
                        {"FIELDLINK_ADMIN_TOKEN": "v" * 16}, "must differ"),
        "missing-file": (["--viewer-token-file", str(tmp_path / "nope")], {}, "nope"),
        "empty-file": (["--viewer-token-file", str(tmp_path / "empty")], {}, "empty"),
    }[case]
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    rc = cli.main(["server", "--port", "0", "--db", str(tmp_path / "c.db")] + args)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("fieldlink server:")]
    assert rc == 2 and len(lines) == 1 and named in lines[0], err
    assert "Traceback" not in err and "x" * 20 not in err


def test_tokens_from_files_and_environment_reach_the_server(collector_proc, tmp_path):
    tf = tmp_path / "viewer.token"
    tf.write_text("viewer-token-from-a-file\n")
    c = collector_proc({"dev-1": "tok-1"}, extra_args=["--viewer-token-file", str(tf)])
    import urllib.request
    import urllib.error

    def status(token):
        req = urllib.request.Request(c.http_url + "api/devices",
                                     headers={"Authorization": "Bearer " + token})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
    assert status("viewer-token-from-a-file") == 200
    assert status(c.admin_token) == 200          # $FIELDLINK_ADMIN_TOKEN, admin implies viewer
    assert status(c.viewer_token) == 401         # the last --viewer-token-file counts
    with open("/proc/%d/cmdline" % c.proc.pid, "rb") as f:
        assert b"viewer-token-from-a-file" not in f.read()
    import os
    import stat
    for path in (c.viewer_token_path, c.db_path + ".devices.json"):   # secrets: owner only
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, path


def test_short_device_tokens_are_named_at_startup(tmp_path, capsys):
    from fieldlink_tools import cli
    (tmp_path / "d.json").write_text('{"weak-1": "abc", "ok-1": "a-device-token-of-24-chars"}')
    cli.main(["server", "--port", "0", "--devices", str(tmp_path / "d.json"),
              "--db", str(tmp_path / "x" / "c.db"), "--keep-health", "-1"])
    err = capsys.readouterr().err
    assert "1 device token(s) shorter than 16 characters (weak-1)" in err and "abc" not in err


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "collector.example"])
def test_short_device_tokens_are_refused_off_loopback(tmp_path, capsys, host):
    from fieldlink_tools import cli
    (tmp_path / "d.json").write_text('{"weak-1": "abc", "ok-1": "a-device-token-of-24-chars"}')
    rc = cli.main(["server", "--host", host, "--port", "0", "--devices",
                   str(tmp_path / "d.json"), "--db", str(tmp_path / "x" / "c.db")])
    err = capsys.readouterr().err
    assert rc == 2 and "(weak-1): refused when listening on " + host in err and "abc" not in err
    assert not (tmp_path / "x" / "c.db").exists()      # refused before anything was opened
