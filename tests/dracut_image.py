"""The pruned Debian 13 root of tests/linux_images.py made a dracut image: Debian's
``dracut-core`` (tests/dracut_debs.py) unpacked into it (``dpkg -x``: /usr/bin/dracut,
lsinitrd and the modules), and its initramfs built again, by that dracut in a chroot,
as one made for other hardware would be: the image's configuration omits the NVMe driver
(``/etc/dracut.conf.d/10-no-nvme.conf``, ``omit_drivers+=" nvme "``; an ``add_drivers``
naming it wins, dracut says so), so the toolkit's rebuild has it to add.
"""

from __future__ import annotations

import contextlib
import subprocess
from pathlib import Path
from types import SimpleNamespace

import dracut_debs
import linux_images as li

OMIT_CONF = "etc/dracut.conf.d/10-no-nvme.conf"
# dracut builds in /var/tmp (the image's root: its tree of the generic initramfs is tens
# of MB) and writes the new ~24 MB file beside the old one: linux_images' default sizes
# (352 MiB root, 308 MB used) fail with "Creation of ... failed" (and dracut removes the
# old initramfs)
BOOT_MIB, ROOT_MIB = 128, 512
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C", "HOME": "/root"}


def missing() -> str | None:
    """Why the dracut image cannot be made here (None: it can)."""
    if why := li.missing():
        return why
    return dracut_debs.debs()[1]


def chroot(root: Path, *cmd: str) -> str:
    return li.run("chroot", str(root), *cmd, env=ENV)


@contextlib.contextmanager
def _pseudo(root: Path):
    done = []
    try:
        for d in ("dev", "proc", "sys"):
            li.run("mount", "--bind", f"/{d}", str(root / d))
            done.append(root / d)
        yield
    finally:
        for d in reversed(done):
            subprocess.run(["umount", "-l", str(d)], capture_output=True)


def make_dracut(root: Path, version: str) -> str:
    """``root`` (a :func:`linux_images.pruned_root`) with dracut unpacked into it and its
    initramfs built by that dracut without nvme; the initramfs's name in the image."""
    debs, why = dracut_debs.debs()
    assert debs, why
    for deb in debs:
        li.run("dpkg-deb", "-x", str(deb), str(root))
    assert (root / "usr" / "bin" / "dracut").exists()
    (root / OMIT_CONF).parent.mkdir(parents=True, exist_ok=True)
    (root / OMIT_CONF).write_text('# built for a machine without NVMe\nomit_drivers+=" nvme "\n')
    name = f"/boot/initrd.img-{version}"
    with _pseudo(root):
        chroot(root, "dracut", "--force", "--no-hostonly", name, version)
    return name


def listing(root: Path, initramfs: str) -> str:
    """``lsinitrd`` of ``initramfs`` (a path in the image), run in its chroot."""
    return chroot(root, "lsinitrd", initramfs)


def module_image(tmp_path_factory):
    """For a module-scoped fixture: the dracut root and its GPT disk image (``work``,
    ``root``, ``version``, ``initramfs``, ``path``); skipped with the reason when the ISO
    build's chroot or the .deb files are absent."""
    import pytest
    if why := missing():
        pytest.skip(why)
    work = tmp_path_factory.mktemp("dracut-image")
    root = work / "root"
    version = li.pruned_root(root)
    name = make_dracut(root, version)
    return SimpleNamespace(work=work, root=root, version=version, initramfs=name,
                           path=li.disk_image(work / "disk.img", root, boot_mib=BOOT_MIB,
                                          root_mib=ROOT_MIB))
