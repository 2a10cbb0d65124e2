"""File-system faults for the trainer's error tests: unreadable (chmod 000) and read-only (chmod 555) paths.

The mode is always really set. A non-root user (CI) then meets the kernel's own refusal. Root is not refused
by the kernel, so there the same refusal is emulated where the kernel would make it: open/os.open/os.mkdir/
os.scandir/os.listdir raise the PermissionError (errno 13, the path as filename) that a non-root user gets.
The code under test runs unchanged either way; only the answer of the system call is emulated.
"""
import builtins
import errno
import io
import os
import stat
from pathlib import Path

IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


def _inside(path, root):
    try:
        path = Path(os.path.abspath(os.fspath(path)))
    except TypeError:  # a file descriptor or file object: not a path
        return False
    return path == root or root in path.parents


class Denied:
    """Paths made unreadable or read-only for the length of a test (modes restored at teardown)."""

    def __init__(self, monkeypatch):
        self.monkeypatch = monkeypatch
        self.unreadable, self.read_only, self.modes = [], [], {}
        if IS_ROOT:
            self._emulate()

    def unreadable_path(self, path):
        """chmod 000: neither listed nor read (a folder's files cannot be reached either)."""
        path = Path(path).resolve()
        self.modes.setdefault(path, stat.S_IMODE(path.stat().st_mode))
        path.chmod(0)
        self.unreadable.append(path)
        return path

    def read_only_folder(self, path):
        """chmod 555: readable, but nothing can be created or changed in it."""
        path = Path(path).resolve()
        path.mkdir(parents=True, exist_ok=True)
        self.modes.setdefault(path, stat.S_IMODE(path.stat().st_mode))
        path.chmod(0o555)
        self.read_only.append(path)
        return path

    def restore(self):
        for path, mode in self.modes.items():
            path.chmod(mode)

    # -- what the kernel does for a non-root user, emulated for root ---------------------------------------
    def _check(self, path, write):
        denied = any(_inside(path, root) for root in self.unreadable)
        if write:
            denied = denied or any(_inside(path, root) and Path(os.path.abspath(path)) != root
                                   for root in self.read_only)
        if denied:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))

    def _emulate(self):
        real_open, real_os_open = builtins.open, os.open
        real_mkdir, real_scandir, real_listdir = os.mkdir, os.scandir, os.listdir

        def fake_open(file, mode="r", *args, **kwargs):
            if isinstance(file, (str, bytes, os.PathLike)):
                self._check(file, write=any(c in mode for c in "wax+"))
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            self._check(path, write=bool(flags & _WRITE_FLAGS))
            return real_os_open(path, flags, *args, **kwargs)

        def fake_mkdir(path, *args, **kwargs):
            self._check(path, write=True)
            return real_mkdir(path, *args, **kwargs)

        def fake_scandir(path="."):
            if isinstance(path, (str, bytes, os.PathLike)):
                self._check(path, write=False)
            return real_scandir(path)

        def fake_listdir(path="."):
            if isinstance(path, (str, bytes, os.PathLike)):
                self._check(path, write=False)
            return real_listdir(path)

        for owner in (builtins, io):
            self.monkeypatch.setattr(owner, "open", fake_open)
        self.monkeypatch.setattr(os, "open", fake_os_open)
        self.monkeypatch.setattr(os, "mkdir", fake_mkdir)
        self.monkeypatch.setattr(os, "scandir", fake_scandir)
        self.monkeypatch.setattr(os, "listdir", fake_listdir)
