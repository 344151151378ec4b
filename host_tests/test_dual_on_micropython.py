"""Runs every dual test module (marked `# dual` on its first line) on MicroPython too.

On CPython pytest collects those modules directly; here each module becomes one test that
runs all its test functions on the unix port and reports the ones that failed.
"""
from pathlib import Path

import pytest

from fieldlink_tools import paths, upy

HERE = Path(__file__).resolve().parent
DUAL = sorted(p for p in HERE.rglob("test_*.py")
              if p.read_text().startswith("# dual"))


# A whole test module runs in one interpreter, compiled from source (the parser and compiler
# need far more heap than the code they produce) with its fixtures and models: these tests
# check behaviour on MicroPython, so they get room; the board's heap is the memory test's and
# `fieldlink bench heap`/`bench link`'s business.
DUAL_HEAP = "512k"


@pytest.mark.micropython
@pytest.mark.parametrize("module", DUAL, ids=lambda p: str(p.relative_to(HERE)))
def test_dual_module_on_micropython(micropython, module):
    r = upy.run(script=HERE / "mp_dual_runner.py", args=[module],
                path=(paths.FIRMWARE, HERE), heapsize=DUAL_HEAP, timeout=300)
    failures = [l for l in r.stdout.splitlines() if l.startswith("FAIL")]
    assert r.returncode == 0 and not failures, (
        "on MicroPython:\n" + r.stdout[-4000:] + r.stderr[-2000:])
    assert " passed, 0 failed" in r.stdout
