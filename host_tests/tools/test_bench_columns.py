"""`fieldlink bench heap` and `bench link`: one table, one column per binary and placement
given, the last line key=value pairs naming each column. The numbers are benchmarks'; here
only the shape and the choice of columns."""
import subprocess
import sys
import types

from fieldlink_tools import bench_link


def fieldlink(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "fieldlink_tools.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=subprocess.DEVNULL)


def test_bench_heap_prints_one_table_for_every_binary_and_placement(micropython):
    r = fieldlink("bench", "heap", "--micropython", micropython, "--micropython", micropython)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    header = [ln for ln in lines if ln.startswith("step ")]
    assert len(header) == 1 and header[0].split() == ["step"] + ["pypi"] * 4, header
    placed = lines[lines.index(header[0]) + 1].split()
    assert placed == [".mpy", "files", "ROMFS", ".mpy", "files", "ROMFS"], placed
    rows = [ln for ln in lines if ln.startswith("fieldlink.link.supervisor ")]
    assert len(rows) == 1 and len(rows[0].split()) == 1 + 2 * 4, rows
    last = dict(kv.split("=") for kv in lines[-1].split())
    assert set(last) == {"resident_streaming_b_pypi_files", "connect_extra_b_pypi_files",
                         "resident_streaming_b_pypi_rom", "connect_extra_b_pypi_rom", "board"}
    assert all(v.isdigit() for k, v in last.items() if k != "board")
    # a binary without the firmware frozen in has no frozen column, and says why
    assert "pypi frozen: left out (no firmware frozen in)" in r.stdout


def test_columns_leave_out_what_a_binary_cannot_run(tmp_path, micropython):
    script = tmp_path / "micropython-script"
    script.write_text("#!/bin/sh\nexit 1\n")
    script.chmod(0o755)

    args = types.SimpleNamespace(placement=list(bench_link.PLACEMENTS),
                                 micropython=[micropython, str(script)])
    said = []
    cols = bench_link.columns(args, said.append)
    assert [(c[1], c[2]) for c in cols] == [("pypi", "files"), ("pypi", "rom"),
                                            ("micropython-script", "files")]
    assert any(s.startswith("  micropython-script rom: left out (") for s in said), said
    r = fieldlink("bench", "link", "--micropython", tmp_path / "missing", "--no-bisect")
    assert r.returncode != 0 and "no binary %s" % (tmp_path / "missing") in r.stderr


def test_bench_march_compares_the_viper_code_compiled_ahead_of_time(micropython):
    r = fieldlink("bench", "march", "--micropython", micropython)
    assert r.returncode == 0, r.stdout + r.stderr
    row = [ln for ln in r.stdout.splitlines() if ln.startswith("pypi ")]
    assert len(row) == 1 and row[0].split()[1] == "x64", row
    last = dict(kv.split("=") for kv in r.stdout.splitlines()[-1].split())
    assert sorted(last) == ["bits_pypi_x64", "resident_b_pypi_import", "resident_b_pypi_march",
                            "smallest_heap_k_pypi_import", "smallest_heap_k_pypi_march"]
    assert all(v.isdigit() for v in last.values()), last   # both imports worked


def test_bench_control_measures_the_virtual_board_beside_the_lightweight_device(micropython):
    r = fieldlink("bench", "control", "--changes", 5, "--poll-1s", 1, "--poll-5s", 1,
                  "--idle-s", 1, "--vboard", 4)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "virtual board (real firmware, MicroPython unix port): 4 changes" in r.stdout
    last = dict(kv.split("=") for kv in r.stdout.splitlines()[-1].split())
    assert list(last) == ["control_p50_ms", "control_p99_ms", "poll_1s_p50_ms",
                          "poll_5s_p50_ms", "vboard_pin_p50_ms", "vboard_pin_p99_ms",
                          "vboard_reported_p50_ms", "vboard_reported_p99_ms"], last
    assert all(float(v) > 0 for v in last.values()), last
