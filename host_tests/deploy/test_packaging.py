"""firmware/package.json (mip) and firmware/manifest.py (frozen image) list exactly the files
deploy copies; `mpremote mip install` of package.json works on the virtual board."""
import json
import re

from deploy_harness import ROOT, mpremote
from fieldlink_tools import deploy

FIRMWARE = ROOT / "firmware"


def test_package_json_matches_the_tree():
    committed = (FIRMWARE / "package.json").read_text()
    assert committed == deploy.package_json_text(), (
        "firmware/package.json is stale: run `python -m fieldlink_tools.deploy "
        "--write-package-json` and commit it")
    pkg = json.loads(committed)
    for target, source in pkg["urls"]:
        assert (FIRMWARE / source).is_file(), source
        assert target == source
    init = (FIRMWARE / "fieldlink" / "__init__.py").read_text()
    assert '__version__ = "%s"' % pkg["version"] in init


def _run_manifest():
    calls = []
    stubs = {
        "metadata": lambda **kw: calls.append(("metadata", kw)),
        "include": lambda p, **kw: calls.append(("include", p)),
        "package": lambda name, **kw: calls.append(("package", name)),
        "module": lambda name, **kw: calls.append(("module", name)),
        "require": lambda name, **kw: calls.append(("require", name)),
    }
    exec(compile((FIRMWARE / "manifest.py").read_text(), "manifest.py", "exec"), stubs)
    return calls


def test_manifest_freezes_the_package_and_main():
    calls = _run_manifest()
    packages = [c[1] for c in calls if c[0] == "package"]
    modules = [c[1] for c in calls if c[0] == "module"]
    assert packages == ["fieldlink"] and (FIRMWARE / "fieldlink" / "__init__.py").is_file()
    assert modules == ["main.py"] and (FIRMWARE / "main.py").is_file()
    meta = [c[1] for c in calls if c[0] == "metadata"][0]
    assert meta["version"] == deploy.package_json()["version"]
    # every file deploy copies is frozen, except boot.py (kept editable on the filesystem)
    frozen = set(modules)
    for rel in deploy.firmware_sources():
        if rel.startswith("fieldlink/"):
            continue   # package("fieldlink") takes the whole folder
        assert rel in frozen or rel == "boot.py", rel


def test_mip_install_from_package_json_onto_a_virtual_board(vboard):
    r = mpremote(vboard.port, "mip", "install", "--target", ".",
                 str(FIRMWARE / "package.json"), timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    for rel in deploy.firmware_sources():
        assert (vboard.flash / rel).read_bytes() == (FIRMWARE / rel).read_bytes(), rel
    assert re.search(r"Installing: \./fieldlink/config\.py", r.stdout)
