"""Import a module for one use and drop it again: code a board runs seldom (boot checks,
recovery, rare link steps) then takes heap only while it runs."""
import sys


def load(name):
    """Import the dotted module `name` and return it."""
    __import__(name)
    return sys.modules[name]


def drop(name):
    """Forget module `name` so the garbage collector can free its code. The import also set
    it as an attribute of its package, which would keep it alive: remove that too."""
    sys.modules.pop(name, None)
    pkg, _, leaf = name.rpartition(".")
    p = sys.modules.get(pkg)
    if p is not None and leaf in getattr(p, "__dict__", {}):
        delattr(p, leaf)
