"""Run one dual test module on MicroPython: every test_* function, one line each.

Usage: micropython mp_dual_runner.py path/to/test_module.py
Prints `PASS name` or `FAIL name: ExcType: message`, then `N passed, M failed`.
"""
import sys

path = sys.argv[1]
d, f = path.rsplit("/", 1)
sys.path.insert(0, d)
here = sys.argv[0].rsplit("/", 1)[0] if "/" in sys.argv[0] else "."
sys.path.insert(0, here)
mod = __import__(f[:-3])
names = sorted(n for n in dir(mod) if n.startswith("test_"))
passed = failed = 0
for n in names:
    fn = getattr(mod, n)
    try:
        fn()
        passed += 1
        print("PASS", n)
    except Exception as e:
        failed += 1
        print("FAIL %s: %s: %s" % (n, type(e).__name__, e))
        sys.print_exception(e)
print("%d passed, %d failed" % (passed, failed))
sys.exit(1 if failed or not passed else 0)
