"""Debian 13 (trixie) amd64 ``dracut-core`` and those of its Depends the ISO build's chroot
lacks, as .deb files in a cache directory (``build/test-debs/``, or $RTK_TEST_DEBS), for
the dracut host test (tests/test_linux_dracut_host.py, tests/dracut_image.py).

Fetched by the host's apt with a private state, list and cache directory (nothing of the
host's apt configuration or lists is read or changed), from deb.debian.org, the Release
file verified with the archive keyring of the ISO build's chroot (never ``trusted=yes``).
Cached: once the .deb files are there, nothing is fetched.

    python3 tests/dracut_debs.py      # fetch them (once); prints the .deb files
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = Path(os.environ.get("RTK_BUILD_DIR", ROOT / "build"))
CHROOT = BUILD / "iso" / "chroot"
CACHE = Path(os.environ.get("RTK_TEST_DEBS", BUILD / "test-debs"))
KEYRING = CHROOT / "usr" / "share" / "keyrings" / "debian-archive-keyring.gpg"
HOST_KEYRING = Path("/usr/share/keyrings/debian-archive-trixie-stable.gpg")
PACKAGE = "dracut-core"


def _run(*cmd: str) -> str:
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: exit {p.returncode}: "
                           f"{p.stderr[-2000:]}{p.stdout[-1000:]}")
    return p.stdout


def _keyring() -> Path | None:
    for k in (KEYRING, HOST_KEYRING):
        if k.is_file():
            return k
    return None


def _apt(work: Path, keyring: Path) -> list[str]:
    """apt-get's options for the private state, lists, cache and sources in ``work``."""
    for d in ("state/lists/partial", "cache/archives/partial", "etc/preferences.d",
              "etc/apt.conf.d", "etc/trusted.gpg.d"):
        (work / d).mkdir(parents=True, exist_ok=True)
    sources = work / "etc" / "sources.list"
    sources.write_text(f"deb [arch=amd64 signed-by={keyring}] http://deb.debian.org/debian "
                       "trixie main\n")
    return ["-o", f"Dir::State={work / 'state'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", f"Dir::Etc::SourceList={sources}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::Etc::Parts={work / 'etc' / 'apt.conf.d'}",
            "-o", f"Dir::Etc::PreferencesParts={work / 'etc' / 'preferences.d'}",
            "-o", f"Dir::Etc::TrustedParts={work / 'etc' / 'trusted.gpg.d'}",
            "-o", f"Dir::Cache={work / 'cache'}",
            "-o", "APT::Architecture=amd64", "-o", "APT::Architectures::=amd64",
            "-o", "Acquire::Languages=none", "-o", "APT::Sandbox::User=root"]


def _needed(apt: list[str]) -> list[str]:
    """``dracut-core`` and the packages apt would install with it into the ISO build's
    chroot: a simulated install against the chroot's dpkg status (read, never written)."""
    out = _run("apt-get", *apt, "-o",
               f"Dir::State::status={CHROOT / 'var' / 'lib' / 'dpkg' / 'status'}",
               "-s", "-q", "--no-install-recommends", "install", PACKAGE)
    names = [ln.split()[1] for ln in out.splitlines() if ln.startswith("Inst ")]
    assert PACKAGE in names, out
    return names


def debs() -> tuple[list[Path] | None, str | None]:
    """The cached .deb files (None and the reason when they are not there)."""
    found = sorted(CACHE.glob("*.deb"))
    if not any(p.name.startswith(f"{PACKAGE}_") for p in found):
        return None, (f"no {PACKAGE} .deb in {CACHE} (python3 tests/dracut_debs.py "
                      "fetches it)")
    return found, None


def fetch() -> list[Path]:
    """Fetch the .deb files into :data:`CACHE` unless they are there; their paths."""
    have, _ = debs()
    if have:
        return have
    if not (CHROOT / "var" / "lib" / "dpkg" / "status").is_file():
        raise RuntimeError(f"no ISO build chroot at {CHROOT} (./build_iso.sh makes it)")
    keyring = _keyring()
    if keyring is None:
        raise RuntimeError(f"no Debian archive keyring at {KEYRING} or {HOST_KEYRING}")
    work = CACHE / ".apt"
    apt = _apt(work, keyring)
    _run("apt-get", *apt, "-q", "update")
    names = _needed(apt)
    CACHE.mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", *apt, "-q", "download", *names], cwd=CACHE, check=True,
                   stdout=subprocess.DEVNULL)
    have, why = debs()
    if have is None:
        raise RuntimeError(why)
    return have


def main() -> int:
    try:
        for p in fetch():
            print(p)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        print(f"dracut_debs: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
