"""The pruned Debian 13 root of tests/linux_images.py made a dracut image: Debian's
``dracut-core`` (tests/dracut_debs.py) unpacked into it (``dpkg -x``: /usr/bin/dracut,
lsinitrd and the modules), and its initramfs built again, by that dracut in a chroot,
as one made for other hardware would be: the image's configuration omits the NVMe driver
(``/etc/dracut.conf.d/10-no-nvme.conf``, ``omit_drivers+=" nvme "``; an ``add_drivers``
naming it wins, dracut says so), so the toolkit's rebuild has it to add.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import dracut_debs
import linux_images as li

OMIT_CONF = "etc/dracut.conf.d/10-no-nvme.conf"
# the generic (--no-hostonly) initramfs is ~24 MB and the rebuild writes the new one
# beside the old one: more room than linux_images' defaults (64 MiB /boot, 352 MiB root
# with 308 MB used), where dracut's tree in the image's /var/tmp (before the toolkit set
# TMPDIR=/tmp) made it fail
BOOT_MIB, ROOT_MIB = 128, 512


def missing() -> str | None:
    """Why the dracut image cannot be made here (None: it can)."""
    if why := li.missing():
        return why
    return dracut_debs.debs()[1]


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
    with li.pseudo(root):
        li.in_chroot(root, "dracut", "--force", "--no-hostonly", name, version)
    return name


def listing(root: Path, initramfs: str) -> str:
    """``lsinitrd`` of ``initramfs`` (a path in the image), run in its chroot."""
    return li.in_chroot(root, "lsinitrd", initramfs)


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
