"""The Linux initramfs step's decisions, without a disk: fstab parsed and checked against
the restored disk's partitions, the kernels an image has, which tool it uses and the
file it writes, a module found in a listing and in a kernel's modules.dep, the module
added to the configuration, mount points that lead out of the image refused, the
read-only look's options and its records of an existing initramfs, ``auto`` without a
known controller, the report's rows, and the option from the command line and a plan
file."""

from __future__ import annotations

import os
import sys

import pytest

from toolkit.restore import linux_fstab as fstab
from toolkit.restore import linux_initramfs as li
from toolkit.restore import linux_look as look
from toolkit.restore import linux_mounts as lm
from toolkit.restore import linux_report

pytestmark = pytest.mark.unit

FSTAB = """# /etc/fstab: static file system information.
#
# <file system> <mount point>   <type>  <options>       <dump>  <pass>
UUID=1111AAAA-2222-3333-4444-555566667777 /               ext4    errors=remount-ro 0       1
LABEL=BOOT      /boot           ext4    defaults        0       2
PARTUUID=abcdef01-02 /boot/efi  vfat    umask=0077      0       1
/dev/sda3       none            swap    sw              0       0
proc            /proc           proc    defaults        0       0
tmpfs           /tmp            tmpfs   defaults        0       0
UUID=99999999-0000-0000-0000-000000000000 /srv ext4 defaults,nofail 0 2
/dev/disk/by-uuid/dead-beef /mnt/old xfs defaults 0 0
server:/export  /nfs            nfs     defaults        0       0
/srv/a          /srv/b          none    bind            0       0
/dev/mapper/vg0-home /home\\040dir ext4 defaults 0 2
"""

PARTS = [
    {"number": 1, "node": "/dev/sdb1", "fstype": "vfat", "uuid": "ABCDEF01-02",
     "fs_uuid": "12AB-34CD", "label": None, "name": "EFI system"},
    {"number": 2, "node": "/dev/sdb2", "fstype": "ext4", "uuid": "u2",
     "fs_uuid": "aaaaaaaa-0000", "label": "BOOT", "name": None},
    {"number": 3, "node": "/dev/sdb3", "fstype": "ext4", "uuid": "u3",
     "fs_uuid": "1111aaaa-2222-3333-4444-555566667777", "label": "root", "name": None},
]


def test_fstab_is_parsed_with_its_escapes_and_without_comments():
    entries = fstab.parse(FSTAB)
    assert [e.line for e in entries] == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14]
    assert entries[0].mountpoint == "/" and entries[0].options == ("errors=remount-ro",)
    assert entries[-1].mountpoint == "/home dir"
    assert entries[6].optional and not entries[0].optional
    assert fstab.parse("short line\n\n#UUID=x / ext4\n") == []


def test_tags_and_by_links_are_the_same_thing():
    assert fstab.tag("UUID=ab") == ("UUID", "ab")
    assert fstab.tag('LABEL="my root"') == ("LABEL", "my root")
    assert fstab.tag("/dev/disk/by-partuuid/x-01") == ("PARTUUID", "x-01")
    assert fstab.tag("/dev/sda1") is None and fstab.tag("server:/export") is None


def test_each_device_entry_is_found_on_the_disk_or_said_plainly():
    checks = {c.line: c for c in fstab.check(FSTAB, PARTS, "/dev/sdb")}
    assert sorted(checks) == [4, 5, 6, 7, 10, 11, 14]  # proc, tmpfs, NFS, bind: no devices
    assert checks[4].ok and checks[4].partition == 3  # UUIDs compared case-insensitively
    assert checks[5].ok and checks[5].partition == 2
    assert checks[6].ok and checks[6].partition == 1
    assert checks[6].message == "fstab line 6: PARTUUID=abcdef01-02 (/boot/efi) is partition 1"
    assert not checks[7].ok and "kernel name" in checks[7].message
    assert checks[10].message == (
        "fstab line 10: UUID=99999999-0000-0000-0000-000000000000 (/srv) is on no partition "
        "of this disk (/dev/sdb): the boot goes on without it (nofail/noauto)")
    assert checks[11].message.endswith("the system would stop at boot waiting for it")
    assert not checks[14].ok and "/dev/mapper/vg0-home" in checks[14].message


def test_a_logical_volume_is_found_by_its_mapper_name_and_uuid():
    lv = {"node": "/dev/vg0/home", "lv": "vg0/home", "fstype": "ext4", "fs_uuid": "lvu",
          "label": None, "number": None, "aliases": ("/dev/mapper/vg0-home",)}
    c = fstab.check_entry(fstab.parse(FSTAB)[-1], [*PARTS, lv], "/dev/sdb")
    assert c.ok and c.volume == "vg0/home" and c.message.endswith("is logical volume vg0/home")
    assert fstab.find("UUID=LVU", [lv]) is lv


def test_a_logical_volume_is_found_by_udevs_dm_name_and_dm_uuid_links():
    """fstab may name an LV by /dev/disk/by-id/dm-name-VG-LV or dm-uuid-LVM-... (what
    some installers write): found, not reported missing (review helper-56 finding 6)."""
    from toolkit.system import lvm
    uuid = lvm.dm_uuid("g400Dh-13iv-9ZB1-N6O8-HHOb-mn7O-xjZnb9",
                       "ckQLme-hl5Q-nsET-nEFO-7mDt-DMe7-oM0luP")
    assert uuid == "LVM-g400Dh13iv9ZB1N6O8HHObmn7OxjZnb9ckQLmehl5QnsETnEFO7mDtDMe7oM0luP"
    lv = {"node": "/dev/my-vg/root", "lv": "my-vg/root", "fstype": "ext4", "fs_uuid": "u",
          "label": None, "number": None, "aliases": lvm.aliases("my-vg", "root", uuid)}
    for spec in ("/dev/disk/by-id/dm-name-my--vg-root", f"/dev/disk/by-id/dm-uuid-{uuid}",
                 "/dev/mapper/my--vg-root"):
        c = fstab.check_entry(fstab.parse(f"{spec} / ext4 defaults 0 1\n")[0], [lv], "/dev/sdb")
        assert c.ok and c.volume == "my-vg/root", c.message
    c = fstab.check_entry(fstab.parse("/dev/disk/by-id/dm-name-other-root / ext4 d 0 1\n")[0],
                          [lv], "/dev/sdb")
    assert not c.ok and "is on no partition of this disk" in c.message


def test_boot_volumes_come_from_fstab_in_mount_order():
    text = "PARTUUID=abcdef01-02 /boot/efi vfat d 0 1\nLABEL=BOOT /boot/ ext4 d 0 2\n" \
           "UUID=nowhere /boot/firmware vfat d 0 0\n"
    pairs, notes = lm.boot_volumes(text, PARTS)
    assert [(mp, v["number"]) for mp, v in pairs] == [("/boot", 2), ("/boot/efi", 1)]
    assert notes == []
    pairs, notes = lm.boot_volumes("UUID=gone /boot ext4 d 0 2\n", PARTS)
    assert pairs == [] and notes == [
        "/boot (UUID=gone, fstab line 1) is on no partition of this disk: not mounted"]
    assert lm.unplaced("UUID=gone /boot ext4 d 0 2\n", PARTS) == {"/boot": notes[0]}
    assert lm.unplaced(text, PARTS) == {}  # /boot/firmware is not a boot mount point here
    odd = [{**PARTS[1], "fstype": "swap"}]  # /boot on something that is no filesystem
    assert lm.unplaced(f"LABEL={PARTS[1]['label']} /boot ext4 d 0 2\n", odd) == {
        "/boot": "/boot is swap here: not mounted"}
    root = PARTS[2]
    assert lm.lent_nodes(root, text, PARTS, []) == ["/dev/sdb3", "/dev/sdb2", "/dev/sdb1"]


def test_the_look_mounts_read_only_without_replaying_a_journal_and_only_boot():
    shut = ("nodev", "nosuid")  # a device node of the image opens nothing
    assert lm.readonly_options("ext4") == ("ro", "noload", *shut)
    assert lm.readonly_options("ext3") == ("ro", "noload", *shut)
    assert lm.readonly_options("ext2") == ("ro", *shut)  # no journal (ext2 knows no noload)
    assert lm.readonly_options("xfs") == ("ro", "norecovery", "nouuid", *shut)
    assert lm.readonly_options("vfat") == ("ro", *shut) == lm.readonly_options(None)
    assert lm.options_for("ext4") == ("rw", *shut)
    assert lm.options_for("xfs") == ("rw", *shut, "nouuid")
    text = "PARTUUID=abcdef01-02 /boot/efi vfat d 0 1\nLABEL=BOOT /boot ext4 d 0 2\n"
    assert lm.lent_nodes(PARTS[2], text, PARTS, [], look.LOOK_POINTS) == \
        ["/dev/sdb3", "/dev/sdb2"]  # the initramfs is in /boot: the ESP is not lent
    assert [mp for mp, _ in look.mount_points(text, PARTS)] == ["/boot"]


def test_an_existing_initramfs_seen_without_a_file_or_with_the_module_built_in(tmp_path):
    root = _image(tmp_path, ["6.12"], ["6.12"])
    (tmp_path / "usr/lib/modules/6.12/modules.builtin").write_text("kernel/drivers/nvme/"
                                                                    "host/nvme.ko\n")
    k = look.seen_kernel(root, "update-initramfs", "6.12", "nvme")
    assert k["contains_module"] is None and k["state"] == "builtin"
    assert k["message"] == "/boot/initrd.img-6.12: there is no such file"
    (tmp_path / "boot/initrd.img-6.12").write_bytes(b"x" * 7)
    k = look.seen_kernel(root, "update-initramfs", "6.12", "nvme")  # not listed: built in
    assert k["contains_module"] is True and k["size"] == 7
    assert k["message"] == "/boot/initrd.img-6.12, 7 bytes: nvme is built into this kernel"
    (tmp_path / "boot/initrd.img-6.12").unlink()
    (tmp_path / "boot/initrd.img-6.12").symlink_to("/etc/passwd")
    with pytest.raises(lm.MountError, match="leads out of it"):
        look.seen_kernel(root, "update-initramfs", "6.12", "nvme")


def test_auto_without_a_known_controller_rebuilds_nothing_and_mounts_nothing():
    out = li.Outcome(2)
    root = {"node": "/dev/nonexistent-rtk", "fstype": "ext4"}  # a mount would fail
    assert li.needed(root, "", PARTS, None, out) is False
    assert out.status == "skipped" and not out.warn and out.kernels == []
    assert out.message == ("the target's storage controller is not known (a loop device, "
                           "iSCSI or USB names none): not rebuilt (--linux-initramfs on "
                           "rebuilds it anyway)")


def test_a_mount_point_leading_out_of_the_image_is_refused(tmp_path):
    (tmp_path / "boot").mkdir()
    (tmp_path / "evil").symlink_to("/etc")
    assert lm.inside(str(tmp_path), "/boot") == str(tmp_path / "boot")
    with pytest.raises(lm.MountError, match="leads out of it"):
        lm.inside(str(tmp_path), "/evil")
    with pytest.raises(lm.MountError, match="not a directory"):
        lm.inside(str(tmp_path), "/nothing")


def _image(tmp_path, versions, vmlinuz, tool="update-initramfs"):
    for v in versions:
        (tmp_path / "usr/lib/modules" / v).mkdir(parents=True)
    (tmp_path / "boot").mkdir()
    for v in vmlinuz:
        (tmp_path / "boot" / f"vmlinuz-{v}").write_bytes(b"k")
    if tool:
        path = tmp_path / ("usr/bin/dracut" if tool == "dracut" else "usr/sbin/update-initramfs")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
    return str(tmp_path)


def test_the_kernels_are_those_of_the_image_with_their_vmlinuz(tmp_path):
    root = _image(tmp_path, ["6.1.0-9-amd64", "6.12.1-amd64", "5.10-orphan"],
                  ["6.1.0-9-amd64", "6.12.1-amd64"])
    (tmp_path / "lib" / "modules" / "4.19-old").mkdir(parents=True)  # an unmerged /usr
    (tmp_path / "boot" / "vmlinuz-4.19-old").write_bytes(b"k")
    assert li.kernels(root) == ["4.19-old", "6.1.0-9-amd64", "6.12.1-amd64"]
    assert li.image_tool(root) == "update-initramfs"
    assert li.initramfs_name("update-initramfs", root, "6.1") == "/boot/initrd.img-6.1"
    assert li.rebuild_argv("update-initramfs", "6.1", "/boot/initrd.img-6.1", True) == \
        ["update-initramfs", "-u", "-k", "6.1"]
    assert li.rebuild_argv("update-initramfs", "6.1", "/boot/initrd.img-6.1", False)[1] == "-c"


def test_dracut_wins_and_names_its_file_as_the_image_does(tmp_path):
    root = _image(tmp_path, ["5.14.0-70.el9.x86_64"], ["5.14.0-70.el9.x86_64"], "dracut")
    (tmp_path / "usr/sbin").mkdir(parents=True)
    (tmp_path / "usr/sbin/update-initramfs").write_text("")  # a Debian with dracut has both
    assert li.image_tool(root) == "dracut"
    assert li.initramfs_name("dracut", root, "5.14") == "/boot/initramfs-5.14.img"
    (tmp_path / "boot" / "initrd-5.14").write_bytes(b"")  # SUSE's: the one its GRUB loads
    (tmp_path / "boot" / "initrd").symlink_to("initrd-5.14")
    assert li.initramfs_name("dracut", root, "5.14") == "/boot/initrd-5.14"
    (tmp_path / "boot" / "initrd.img-5.14").write_bytes(b"")  # dracut on Debian
    assert li.initramfs_name("dracut", root, "5.14") == "/boot/initrd.img-5.14"
    assert li.rebuild_argv("dracut", "5.14", "/boot/x.img", True) == \
        ["dracut", "--force", "/boot/x.img", "5.14"]
    assert li.listing_argv("dracut", "/boot/x.img") == ["lsinitrd", "/boot/x.img"]
    assert li.image_tool(str(tmp_path / "boot")) is None


def test_a_module_is_found_in_listings_and_in_the_kernels_module_lists(tmp_path):
    lsinitramfs = "usr/lib/modules/6.12/kernel/drivers/nvme/host/nvme-core.ko.xz\n" \
                  "usr/lib/modules/6.12/kernel/drivers/scsi/virtio_scsi.ko.zst\n"
    lsinitrd = "-rw-r--r--   1 root root  51234 Jan  1 00:00 usr/lib/modules/5.14/kernel/" \
               "drivers/usb/storage/usb-storage.ko.xz\n"
    assert not li.has_module(lsinitramfs, "nvme")  # nvme-core is not nvme
    assert li.has_module(lsinitramfs, "virtio_scsi") and li.has_module(lsinitramfs, "virtio-scsi")
    assert li.has_module(lsinitrd, "usb_storage") and li.has_module(lsinitrd, "usb-storage")
    base = tmp_path / "lib/modules/6.12"
    base.mkdir(parents=True)
    (base / "modules.dep").write_text("kernel/drivers/nvme/host/nvme.ko.xz: kernel/drivers/"
                                      "nvme/host/nvme-core.ko.xz\n")
    (base / "modules.builtin").write_text("kernel/drivers/ata/ahci.ko\n")
    assert li.module_state(str(tmp_path), "6.12", "nvme") == "module"
    assert li.module_state(str(tmp_path), "6.12", "ahci") == "builtin"
    assert li.module_state(str(tmp_path), "6.12", "megaraid_sas") is None


def test_the_module_is_added_to_the_configuration_once(tmp_path):
    conf = tmp_path / "etc/initramfs-tools/modules"
    conf.parent.mkdir(parents=True)
    conf.write_text("# List of modules\nloop")  # no newline at its end
    assert li.add_module_config("update-initramfs", str(tmp_path), "nvme") == \
        "/etc/initramfs-tools/modules: nvme added"
    assert li.add_module_config("update-initramfs", str(tmp_path), "nvme") is None
    assert conf.read_text().splitlines()[1:] == [
        "loop", "# rtk restore: the storage controller of the disk this system was restored "
        "onto", "nvme"]
    (tmp_path / "etc/dracut.conf.d").symlink_to("/etc")
    with pytest.raises(lm.MountError, match="leads out of it"):
        li.add_module_config("dracut", str(tmp_path), "virtio_scsi")
    (tmp_path / "etc/dracut.conf.d").unlink()
    assert li.add_module_config("dracut", str(tmp_path), "virtio_scsi") == \
        '/etc/dracut.conf.d/90-rtk-storage.conf: add_drivers+=" virtio_scsi " added'
    assert li.add_module_config("dracut", str(tmp_path), "virtio_scsi") is None


def test_the_report_rows_and_the_command_line_summary():
    data = {"mode": "auto", "target_controller": {"name": "NVMe", "driver": "nvme"},
            "roots": [{"partition": 2, "volume": None, "status": "rebuilt",
                       "message": "update-initramfs: 6.12: ok",
                       "kernels": [{"version": "6.12", "message": "/boot/initrd.img-6.12, "
                                    "9 bytes: holds nvme"}],
                       "changes": ["/etc/initramfs-tools/modules: nvme added"],
                       "fstab": [{"line": 4, "ok": False, "message": "fstab line 4: "
                                  "UUID=x (/srv) is on no partition of this disk (/dev/sdb): "
                                  "the system would stop at boot waiting for it"}],
                       "notes": []}]}
    assert linux_report.report_rows(data) == [
        ("mode", "auto"), ("target controller", "NVMe (nvme)"),
        ("partition 2", "rebuilt: update-initramfs: 6.12: ok"),
        ("kernel 6.12", "/boot/initrd.img-6.12, 9 bytes: holds nvme"),
        ("changed", "/etc/initramfs-tools/modules: nvme added"),
        ("fstab line 4", "NOT FOUND: UUID=x (/srv) is on no partition of this disk "
                         "(/dev/sdb): the system would stop at boot waiting for it")]
    assert linux_report.summary(data)[0] == "partition 2: rebuilt: update-initramfs: 6.12: ok"
    assert linux_report.summary(data)[1] == \
        "partition 2: changed /etc/initramfs-tools/modules: nvme added"
    assert linux_report.summary(data)[2].startswith("fstab line 4: UUID=x")
    assert linux_report.report_rows(None) == [] and linux_report.summary(None) == []


def test_the_option_reaches_the_restore_from_the_command_line_and_a_plan_file():
    import argparse

    from toolkit.cli import restore as cli
    from toolkit.restore import RestoreOptions
    from toolkit.unattended.plan import Plan, PlanError, from_file

    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    assert parser.parse_args(["restore", "i", "t"]).linux_initramfs == "auto"
    assert parser.parse_args(["restore", "i", "t", "--linux-initramfs", "off"]) \
        .linux_initramfs == "off"
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "i", "t", "--linux-initramfs", "maybe"])
    plan = {"version": 1, "mode": "restore", "image": "/images/l.img",
            "disk": "serial:beaf11", "consent": "serial:beaf11"}
    assert from_file({**plan, "linux_initramfs": "off"})["linux_initramfs"] == "off"
    assert Plan().linux_initramfs == "auto" and RestoreOptions().linux_initramfs == "auto"
    with pytest.raises(PlanError, match="linux_initramfs"):
        from_file({**plan, "linux_initramfs": "yes"})
    assert tuple(li.MODES) == ("auto", "on", "off")


def test_lvm_without_lvm2_in_the_live_system_is_said(monkeypatch):
    from toolkit.system import tools

    monkeypatch.setattr(tools, "installed", lambda tool: False)
    parts = [{"number": 1, "node": "/dev/sdb1", "fstype": "ext4"},
             {"number": 2, "node": "/dev/sdb2", "fstype": "LVM2_member"}]
    (o,) = li._lvm_roots("/dev/sdb", parts, "nvme", None, None)
    assert o.status == "skipped" and o.warn
    assert o.message == ("the disk has LVM physical volumes (/dev/sdb2) but lvm2 is not "
                         "installed in the live system: their logical volumes are not "
                         "looked into")
    assert li._lvm_roots("/dev/sdb", parts[:1], "nvme", None, None) == []


def test_the_images_programs_run_in_their_own_namespaces_and_paths_stay_on_the_image(
        tmp_path):
    from toolkit.restore import linux_chroot as lc
    assert lc.argv_in("/mnt/r", ["lsinitramfs", "/boot/x"]) == [
        "unshare", "--mount", "--pid", "--net", "--ipc", "--uts", "--fork", "--propagation",
        "private", "--mount-proc=/mnt/r/proc", sys.executable, "-I", "-m",
        "toolkit.restore.linux_jail", "/mnt/r", "lsinitramfs", "/boot/x"]
    (tmp_path / "proc").symlink_to("/proc")
    with pytest.raises(lc.OutOfImage, match="/proc of the image is not a directory"):
        lc.chroot(str(tmp_path), ["true"])
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "up").symlink_to("../..")
    dev = {(tmp_path / "etc").stat().st_dev}
    assert lc.on_image(str(tmp_path), "etc/new/dir", dev) == str(tmp_path / "etc/new/dir")
    with pytest.raises(lm.MountError, match="leads out of it"):
        lc.on_image(str(tmp_path), "etc/up/x", dev)
    with pytest.raises(lc.OutOfImage, match="not the image's own"):
        lc.on_image(str(tmp_path), "etc", {-1})


def test_the_images_text_files_are_read_as_regular_files_only(tmp_path):
    """What the live system reads of the image (module lists, the modules file): never a
    FIFO (it would wait for ever), a symlink (/dev/zero, the live system's files) or a
    file of another filesystem; bytes that are not UTF-8 replaced."""
    from toolkit.restore import linux_chroot as lc
    devs = {tmp_path.stat().st_dev}
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "modules").write_bytes(b"# f\xfcr\nnvme\n")
    assert lc.read_text(str(tmp_path), "etc/modules", devs) == "# f\ufffdr\nnvme\n"
    os.mkfifo(tmp_path / "etc" / "pipe")
    with pytest.raises(lc.OutOfImage, match="etc/pipe is not a regular file of the image"):
        lc.read_text(str(tmp_path), "etc/pipe", devs)
    (tmp_path / "etc" / "zero").symlink_to("/dev/zero")
    with pytest.raises(lc.OutOfImage, match="a symlink"):
        lc.read_text(str(tmp_path), "etc/zero", devs)
    with pytest.raises(lc.OutOfImage, match="larger than"):
        lc.read_text(str(tmp_path), "etc/modules", devs, limit=4)
    with pytest.raises(FileNotFoundError):
        lc.read_text(str(tmp_path), "etc/none", devs)
    with pytest.raises(lc.OutOfImage, match="not the image's own"):
        lc.read_text(str(tmp_path), "etc/modules", {-1})


def test_an_encrypted_home_on_a_logical_volume_is_named_as_one():
    """crypttab opens /home from a LUKS logical volume (LUKS on LVM), by its
    /dev/mapper name or the LUKS UUID: said to be that logical volume (review helper-59:
    "partition None (encrypted ...)")."""
    volumes = [
        {"node": "/dev/loop7p1", "number": 1, "fstype": "ext4", "fs_uuid": "1111",
         "label": None},
        {"node": "/dev/vg/home", "lv": "vg/home", "fstype": "crypto_LUKS", "label": None,
         "fs_uuid": "3333", "number": None,
         "aliases": ["/dev/mapper/vg-home", "/dev/disk/by-id/dm-name-vg-home"]}]
    text = "UUID=1111 / ext4 defaults 0 1\n/dev/mapper/home_crypt /home ext4 defaults 0 2\n"
    for source in ("/dev/mapper/vg-home", "UUID=3333"):
        _, home = fstab.check(text, volumes, "/dev/loop7", f"home_crypt {source} none luks\n")
        assert home.ok and home.volume == "vg/home" and home.partition is None
        assert home.message == f"fstab line 2: /dev/mapper/home_crypt (/home) is home_crypt " \
            f"of /etc/crypttab, opened at boot from {source}: logical volume vg/home (LUKS, " \
            "restored as is)"
    _, gone = fstab.check(text, volumes, "/dev/loop7", "home_crypt UUID=9999 none luks\n")
    assert not gone.ok and gone.message.endswith(
        "opened at boot from UUID=9999, which is on no partition of this disk (/dev/loop7): "
        "the system would stop at boot waiting for it")
