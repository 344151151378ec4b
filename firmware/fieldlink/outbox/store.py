"""The outbox's one door to the flash: every file operation on its directory goes through a
DirStore, so a test fakes this class (with faults) and nothing else."""
import os


class DirStore:
    """The outbox's directory. put() writes a file whole to a temporary name and renames it
    into place, so a power cut mid-write leaves either the old state or the new one."""

    def __init__(self, path):
        self.path = path

    def file(self, name, mode="r"):
        return open(self.path + "/" + name, mode)

    def put(self, name, text):
        """Replace file `name` with `text`, whole."""
        with self.file(name + ".tmp", "w") as f:
            f.write(text)
        try:
            self.rename(name + ".tmp", name)
        except OSError:  # filesystems where rename does not replace (FAT)
            self.remove(name)
            self.rename(name + ".tmp", name)

    def rename(self, old, new):
        os.rename(self.path + "/" + old, self.path + "/" + new)

    def remove(self, name):
        """Remove file `name`; False if it could not be removed."""
        try:
            os.remove(self.path + "/" + name)
            return True
        except OSError:
            return False

    def size(self, name):
        return os.stat(self.path + "/" + name)[6]

    def exists(self, name):
        try:
            os.stat(self.path + "/" + name)
            return True
        except OSError:
            return False

    def make(self):
        """Create the directory if it is not there."""
        try:
            os.mkdir(self.path)
        except OSError:
            pass  # exists

    def entries(self):
        """(name, size or None) of each file, one at a time where the port can (a list of
        every name of a big backlog would be tens of KB of heap)."""
        ild = getattr(os, "ilistdir", None)  # (CPython has none)
        if ild is None:
            for n in os.listdir(self.path):
                yield n, None
        else:
            for e in ild(self.path):
                yield e[0], (e[3] if len(e) > 3 else None)  # (littlefs and FAT give sizes)
