"""Real storage faults for the tests: a directory on a small file system that can be filled, a read-only directory.

Not a test module (no ``test_`` prefix): imported by tests/test_spool.py, tests/test_storage.py and
tests/test_exactly_once.py.

* ``small_disk(directory)``: a tmpfs of its own (``mount -t tmpfs -o size=…``, needs root: the project machine
  runs the tests as root). Without the right to mount, ENOSPC is injected instead into the spool's writes under
  that directory (``hotstage.acquisition.storage.spool._write_all``, the one place the spool writes), so the same
  outcomes are asserted either way. ``fill()`` takes every free byte, ``free()`` gives them back.
* ``read_only(directory)``: ``chattr -R +i`` (the immutable flag: even root and already-open files cannot write,
  as a read-only remount would do), or ``chmod -R a-w`` where the immutable flag is not available (not root:
  then permission bits do stop writes). Restored on exit whatever happens.
"""

from __future__ import annotations

import errno
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import hotstage.acquisition.storage.spool as spool_module


class SmallDisk:
    """A directory whose file system can be filled (module docstring)."""

    def __init__(self, directory: Path, mounted: bool) -> None:
        self.directory = directory
        self.mounted = mounted
        self._ballast = directory / ".ballast"
        self._real_write_all = spool_module._write_all
        self.full = False

    def fill(self) -> None:
        """Take every free byte of the file system (or start refusing spool writes under the directory)."""
        self.full = True
        if not self.mounted:
            spool_module._write_all = self._refusing_write_all
            return
        chunk = b"\0" * (64 * 1024)
        with open(self._ballast, "ab") as f:
            try:
                while True:
                    f.write(chunk)
                    f.flush()
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
        for size in (4096, 512, 1):  # the last partial blocks too
            try:
                with open(self._ballast, "ab") as f:
                    while True:
                        f.write(b"\0" * size)
                        f.flush()
            except OSError:
                pass

    def free(self) -> None:
        """Give the space back."""
        self.full = False
        spool_module._write_all = self._real_write_all
        self._ballast.unlink(missing_ok=True)

    def _refusing_write_all(self, fd: int, data: bytes) -> None:
        """The spool's write, failing with ENOSPC for files under the directory while ``full``."""
        if self.full and Path(os.readlink(f"/proc/self/fd/{fd}")).is_relative_to(self.directory):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._real_write_all(fd, data)


@contextmanager
def small_disk(directory: Path, size: str = "4m") -> Iterator[SmallDisk]:
    """``directory`` on a small tmpfs of its own when mounting is allowed (module docstring)."""
    directory.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(directory)],
                             capture_output=True).returncode == 0
    disk = SmallDisk(directory, mounted)
    try:
        yield disk
    finally:
        disk.free()
        if mounted:
            subprocess.run(["umount", "-l", str(directory)], check=False)


class ReadOnly:
    """Switches a directory tree read-only and back (module docstring)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.how: str | None = None

    def on(self) -> None:
        """Make it read-only now."""
        if subprocess.run(["chattr", "-R", "+i", str(self.directory)], capture_output=True).returncode == 0:
            self.how = "chattr"
            return
        subprocess.run(["chattr", "-R", "-i", str(self.directory)], capture_output=True)  # whatever it did set
        assert os.geteuid() != 0, "as root, read-only needs the immutable flag (chattr) on this file system"
        subprocess.run(["chmod", "-R", "a-w", str(self.directory)], check=True)
        self.how = "chmod"

    def off(self) -> None:
        """Writable again."""
        if self.how == "chattr":
            subprocess.run(["chattr", "-R", "-i", str(self.directory)], check=True)
        elif self.how == "chmod":
            subprocess.run(["chmod", "-R", "u+w", str(self.directory)], check=True)
        self.how = None


@contextmanager
def read_only(directory: Path) -> Iterator[ReadOnly]:
    """A switch for ``directory``: ``.on()`` makes it read-only; it is writable again on exit."""
    switch = ReadOnly(directory)
    try:
        yield switch
    finally:
        switch.off()
