"""iSCSI LUNs in RFC 4173 / dracut form, and disk selection by stable identity and
consent on the disks of a captured guest probe (iSCSI LUN sda serial beaf11, virtio
vda serial RTKVIRTIO0001, two CD-ROMs, a floppy, loop devices)."""

from __future__ import annotations

import json

import pytest
from conftest import guest_disks
from hypothesis import given
from hypothesis import strategies as st

from toolkit.iscsi.adm import Chap
from toolkit.unattended.cmdline import CmdlineError, encode
from toolkit.unattended.selectors import (
    SOURCE,
    TARGET,
    ConsentError,
    IscsiLun,
    SelectError,
    check_consent,
    parse_consent,
    parse_iscsi,
    parse_selector,
    parse_size,
    select,
)

IQN = "iqn.2009-06.dracut:target0"


@pytest.fixture(scope="module")
def disks():
    return guest_disks()


# --- iSCSI LUNs -----------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    # dracut.cmdline(7) examples
    (f"iscsi:192.168.50.1::::{IQN}", IscsiLun(TARGET, "192.168.50.1", IQN)),
    (f"iscsi:[2001:DB8::1]::::{IQN}", IscsiLun(TARGET, "2001:db8::1", IQN)),
    # RFC 4173: every field given, protocol 6 (TCP); the IQN holds colons
    ("iscsi:my.target.dns.name:6:3260:0:iqn.2007-08.name.dns.target.my:iscsiboot",
     IscsiLun(TARGET, "my.target.dns.name", "iqn.2007-08.name.dns.target.my:iscsiboot")),
    ("iscsi:10.0.0.1::3261:2:iqn.2001-05.com.example:store:disk:7",
     IscsiLun(TARGET, "10.0.0.1", "iqn.2001-05.com.example:store:disk:7", 3261, 2)),
    ("iscsi:[fd00::5]:6:3262:4:eui.0123456789ABCDEF",
     IscsiLun(TARGET, "fd00::5", "eui.0123456789ABCDEF", 3262, 4)),
    # the optional :[<iscsi_iface_name>]:[<netdev_name>] fields, left empty
    (f"iscsi:10.0.0.1::3260:::1:{IQN}", IscsiLun(TARGET, "10.0.0.1", IQN, 3260, 1)),
    (f"iscsi:10.0.0.1::3260::1:{IQN}", IscsiLun(TARGET, "10.0.0.1", IQN, 3260, 1)),
    # CHAP, and mutual CHAP
    (f"iscsi:bob:s3cret@10.0.0.1::::{IQN}",
     IscsiLun(TARGET, "10.0.0.1", IQN, chap=Chap("bob", "s3cret"))),
    (f"iscsi:bob:s3cret:tgt:t0ps3cret@[2001:db8::1]::3260:3:{IQN}",
     IscsiLun(TARGET, "2001:db8::1", IQN, 3260, 3, Chap("bob", "s3cret"),
              Chap("tgt", "t0ps3cret"))),
    # an empty credentials part lets the IQN hold an @ (dracut's example)
    ("iscsi:@192.168.1.100::3260::iqn.2009-01.com.example:testdi@sk",
     IscsiLun(TARGET, "192.168.1.100", "iqn.2009-01.com.example:testdi@sk")),
    # %-escapes decoded per field, after splitting: a colon and an @ in a password
    (f"iscsi:bob:p%3Aw%40rd@10.0.0.1::::{IQN}",
     IscsiLun(TARGET, "10.0.0.1", IQN, chap=Chap("bob", "p:w@rd"))),
])
def test_rfc4173_forms(value, expected):
    assert parse_iscsi(value, TARGET, "rtk.target") == expected


@pytest.mark.parametrize("value, message", [
    ("10.0.0.1::::" + IQN, "expected iscsi:"),
    ("iscsi:10.0.0.1:" + IQN, "expected iscsi:"),
    ("iscsi:10.0.0.1::::", "expected iscsi:"),
    ("iscsi:10.0.0.1:17:::" + IQN, "protocol '17': only 6"),
    ("iscsi:10.0.0.1::0::" + IQN, "port '0' is not a number from 1 to 65535"),
    ("iscsi:10.0.0.1::99999::" + IQN, "port '99999'"),
    ("iscsi:10.0.0.1:::0x1F:" + IQN, "LUN '0x1F' is not a decimal number"),
    ("iscsi:10.0.0.1::3260:iser:eth1:0:" + IQN, "are not supported"),
    ("iscsi:10.0.0.1::::iqn.bad", "'iqn.bad' is not an iSCSI name"),
    ("iscsi:bad_host!::::" + IQN, "'bad_host!' is not a server name"),
    ("iscsi:[2001:db8::1::::" + IQN, "unbalanced"),
    ("iscsi:[10.0.0.1]::::" + IQN, r"\[10.0.0.1\] is not an IPv6 address"),
    ("iscsi:bob@10.0.0.1::::" + IQN, "before @ expected <username>:<password>"),
    ("iscsi:bob:@10.0.0.1::::" + IQN, "none empty"),
])
def test_iscsi_errors(value, message):
    with pytest.raises(CmdlineError, match=message) as e:
        parse_iscsi(value, SOURCE, "rtk.source")
    assert str(e.value).startswith("rtk.source=")


def test_secrets_never_show():
    for value in (f"iscsi:bob:hunter22@10.0.0.1::::{IQN}",
                  f"iscsi:bob:hunter22:tgt:hunter33@10.0.0.1::::{IQN}"):
        lun = parse_iscsi(value, TARGET, "rtk.target")
        for text in (repr(lun), str(lun), json.dumps(lun.to_dict())):
            assert "hunter" not in text
        assert lun.to_dict()["chap"] == {"username": "bob", "password": "********"}
    for bad in (f"iscsi:bob:hunter22@10.0.0.1:17:::{IQN}", "iscsi:bob:hunter22@h::::iqn.bad",
                f"iscsi:a:hunter22:b@10.0.0.1::::{IQN}"):
        with pytest.raises(CmdlineError) as e:
            parse_iscsi(bad, TARGET, "rtk.target")
        assert "hunter" not in str(e.value) and "iscsi:***@" in str(e.value)


PASSWORDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1,
                    max_size=16)


@given(user=st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True), password=PASSWORDS,
       lun=st.integers(0, 16383), port=st.integers(1, 65535))
def test_iscsi_round_trip_with_any_password(user, password, lun, port):
    secret = encode(password).replace(":", "%3A").replace("@", "%40").replace(" ", "%20")
    value = f"iscsi:{user}:{secret}@[fd00::1]::{port}:{lun}:iqn.2001-05.com.example:a:b"
    got = parse_iscsi(value, SOURCE, "rtk.source")
    assert (got.chap, got.port, got.lun, got.host) == (Chap(user, password), port, lun, "fd00::1")


# --- selectors ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, name", [
    ("serial:beaf11", "sda"),
    ("serial:RTKVIRTIO0001", "vda"),
    ("wwn:0x60000000000000000e00000000010001", "sda"),
    ("wwn:60000000000000000E00000000010001", "sda"),
    ("wwn:naa.60000000000000000e00000000010001", "sda"),
    ("by-id:virtio-RTKVIRTIO0001", "vda"),
    ("by-id:scsi-360000000000000000e00000000010001", "sda"),
    ("/dev/disk/by-id/wwn-0x60000000000000000e00000000010001", "sda"),
    ("by-path:ip-10.0.2.2:3260-iscsi-iqn.2026-11.lab.rtk:bdr1-lun-1", "sda"),
    ("by-path:/dev/disk/by-path/virtio-pci-0000:00:04.0", "vda"),
    ("iscsi:iqn.2026-11.lab.rtk:bdr1:1", "sda"),
    ("rule:transport=virtio", "vda"),
    ("rule:transport=iscsi,size>=32M,model~virtual", "sda"),
    ("rule:size>60M", "vda"),  # the 1 GB CD-ROM is not a candidate of a rule
    ("rule:size>=64MiB,size<=64MiB", "vda"),
    ("rule:transport!=iscsi", "vda"),
    ("rule:vendor=IET", "sda"),
    ("rule:iqn~bdr1,lun=1", "sda"),
    ("rule:rotational=yes,serial~VIRTIO", "vda"),  # virtio reports rotational
    ("rule:transport=cdrom,size<500M", "sr0"),  # named transports are candidates
    ("rule:model~virtual%2Ddisk", "sda"),  # %-escapes in rule values
])
def test_select_by_stable_identity(disks, text, name):
    assert select(disks, parse_selector(text)).name == name


def test_select_none_or_several_lists_the_disks(disks):
    with pytest.raises(SelectError, match=r"no disk matches rtk.disk=serial:NOPE: the disks "
                       r"here are sda \(iscsi, 33.6 MB, serial beaf11"):
        select(disks, parse_selector("serial:NOPE"))
    with pytest.raises(SelectError, match=r"rtk.disk=rule:size>=30M matches 2 disks, it must "
                       r"match exactly one: sda .*; vda \(virtio, 67.1 MB, serial RTKVIRTIO0001"
                       r"\): add rule terms"):
        select(disks, parse_selector("rule:size>=30M"))


@pytest.mark.parametrize("text", ["/dev/sda", "sda", "/dev/sdb1", "nvme0n1", "/dev/nvme0n1p2",
                                  "vda", "/dev/mapper/vg-root", "mmcblk0"])
def test_kernel_names_are_refused_with_the_reason(text):
    with pytest.raises(CmdlineError, match=f"rtk.disk={text}: kernel names such as /dev/sdb "
                       "change between boots"):
        parse_selector(text)


@pytest.mark.parametrize("text, message", [
    ("label:DATA", "expected one of serial:..., wwn:..."),
    ("serial:", "nothing after serial:"),
    ("iscsi:iqn.2026-11.lab.rtk:bdr1", "expected iscsi:<target IQN>:<LUN>"),
    ("iscsi:notaniqn:1", "expected iscsi:<target IQN>:<LUN>"),
    ("rule:colour=red", "bad rule term 'colour=red'"),
    ("rule:size~big", "bad rule term 'size~big'"),
    ("rule:size>=lots", "'lots' is not a size"),
    ("rule:transport=ide", "unknown transport 'ide'"),
    ("rule:rotational=maybe", "rotational is yes or no"),
    ("rule:lun=x", "LUN 'x' is not a number"),
    ("rule:model~", "model~ needs a value"),
    ("rule:", "bad rule term ''"),
])
def test_selector_errors(text, message):
    with pytest.raises(CmdlineError, match=message.replace(".", r"\.")):
        parse_selector(text)


@pytest.mark.parametrize("text, size", [
    ("512", 512), ("100G", 100 * 10**9), ("1.5T", 1_500_000_000_000), ("64GiB", 64 * 2**30),
    ("64gib", 64 * 2**30), ("10MB", 10**7), ("4k", 4000),
])
def test_sizes(text, size):
    assert parse_size(text) == size


# --- consent ----------------------------------------------------------------------------

def test_consent_matches_the_disk_found(disks):
    sda = select(disks, parse_selector("by-path:ip-10.0.2.2:3260-iscsi-iqn.2026-11.lab.rtk:"
                                       "bdr1-lun-1"))
    check_consent(sda, parse_consent("serial:beaf11"))
    check_consent(sda, parse_consent("wwn:0x60000000000000000e00000000010001"))
    with pytest.raises(ConsentError, match=r"rtk.consent=serial:RTKVIRTIO0001 does not name "
                       r"the disk found, sda \(iscsi, 33.6 MB, serial beaf11.*nothing was written"):
        check_consent(sda, parse_consent("serial:RTKVIRTIO0001"))
    vda = select(disks, parse_selector("serial:RTKVIRTIO0001"))
    with pytest.raises(ConsentError, match="does not name the disk found, vda"):
        check_consent(vda, parse_consent("wwn:0x60000000000000000e00000000010001"))


def test_consent_is_serial_or_wwn_and_the_disk_needs_one(disks):
    with pytest.raises(CmdlineError, match="consent is serial:<serial> or wwn:<wwn>"):
        parse_consent("by-id:virtio-RTKVIRTIO0001")
    fd0 = next(d for d in disks if d.name == "fd0")
    with pytest.raises(ConsentError, match="fd0 has neither serial nor WWN"):
        check_consent(fd0, parse_consent("serial:x"))
