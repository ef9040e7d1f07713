"""An ext4 filesystem in a host image file, made and read without mounting it (the
RTK-DATA disk of a guest): mkfs, then e2fsprogs' debugfs on a copy whose journal e2fsck
has replayed (after a guest's power cut the last commits may be in the journal only)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path


def make(path: Path, size: int, label: str) -> Path:
    """A ``size``-byte image holding one ext4 filesystem labelled ``label``."""
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-L", label, str(path)], check=True,
                   capture_output=True)
    return path


class Snapshot:
    """A copy of the image, its journal replayed (``e2fsck -fy``), read with debugfs."""

    def __init__(self, image: Path, workdir: Path):
        self.path = Path(workdir) / f"{Path(image).name}.snapshot"
        shutil.copyfile(image, self.path)
        fsck = subprocess.run(["e2fsck", "-fy", str(self.path)], capture_output=True,
                              text=True)
        if fsck.returncode >= 4:  # 1, 2: errors corrected; 4 and up: left uncorrected
            raise AssertionError(f"e2fsck {self.path}: {fsck.returncode}\n{fsck.stdout}")
        self.fsck = fsck

    def _debugfs(self, request: str) -> str:
        p = subprocess.run(["debugfs", "-R", request, str(self.path)], capture_output=True,
                           text=True, check=True)
        return p.stdout

    def names(self, directory: str) -> list[str]:
        """The entries of ``directory`` (``debugfs ls -l``), sorted, without . and .."""
        out = self._debugfs(f"ls -l {directory}")
        names = [line.split()[-1] for line in out.splitlines()
                 if re.match(r"\s*\d+\s+\d+", line)]
        return sorted(n for n in names if n not in (".", ".."))

    def read(self, path: str) -> str:
        return self._debugfs(f"cat {path}")
