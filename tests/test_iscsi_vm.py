"""rtk iscsi end to end in the live system, against tgtd on the host (one boot).

A BDR target with two LUNs (a distinct marker at offset 0 and random data in
each) and a SAN target with mutual CHAP: discovery (tgtd advertises
127.0.0.1, the guest's own loopback), a wrong CHAP secret (typed error,
nothing left behind), attach SOURCE and TARGET, LUN-to-device mapping checked
by content, SOURCE refuses writes, TARGET takes them, a persistent
reservation gives a warning, detach cleans up, and the CHAP secrets never
appear in the logs, the journal or the JSON.

RTK_VM_DEV=1 pushes this source tree into the guest (the ISO may be older).
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import time

import pytest
from conftest import MiB
from vmlab.http import HttpServer
from vmlab.qemu import Guest
from vmlab.tgt import Tgt

pytestmark = pytest.mark.vm

PORT = 3262
PORTAL = f"10.0.2.2:{PORT}"
BDR, SAN = "iqn.2026-11.lab.rtk:bdr", "iqn.2026-11.lab.rtk:san"
CHAP = ("sanuser", "SECRET-chap-7d1f")
MUTUAL = ("tgtuser", "SECRET-mutual-4b2e")
WRONG = "SECRET-wrong-0000"


def _lun_image(path, size: int, marker: bytes):
    with open(path, "wb") as f:
        f.write(marker.ljust(4096, b"\0"))
        f.write(os.urandom(size - 4096))
    return path


def _md5(path, length: int = MiB) -> str:
    with open(path, "rb") as f:
        return hashlib.md5(f.read(length)).hexdigest()


@pytest.fixture(scope="module")
def lab(tmp_path_factory, iso, need_root):
    work = tmp_path_factory.mktemp("vm-iscsi")
    tgt = Tgt(work, port=PORT)
    images = {
        (BDR, 1): _lun_image(work / "bdr1.img", 16 * MiB, b"RTK-BDR-LUN-1"),
        (BDR, 2): _lun_image(work / "bdr2.img", 16 * MiB, b"RTK-BDR-LUN-2"),
        (SAN, 1): _lun_image(work / "san1.img", 32 * MiB, b"RTK-SAN-LUN-1"),
    }
    tgt.add_target(BDR, [images[BDR, 1], images[BDR, 2]])
    tgt.add_target(SAN, [images[SAN, 1]], chap=CHAP, mutual=MUTUAL)
    http = HttpServer(work)
    started = time.monotonic()
    guest = Guest(work, iso, name="iscsi")
    try:
        guest.wait_menu(timeout=400)
        guest.open_shell()
        if os.environ.get("RTK_VM_DEV") == "1":
            guest.install_source_tree(http, work)
        guest.run(f"printf %s {shlex.quote(CHAP[1])} > /tmp/chap; "
                  f"printf %s {shlex.quote(WRONG)} > /tmp/wrong; chmod 600 /tmp/chap /tmp/wrong")
        yield {"guest": guest, "images": images, "outputs": []}
    finally:
        guest.stop()
        tgt.stop()
        http.stop()
        print(f"iSCSI VM test: {time.monotonic() - started:.0f} s including boot")


def rtk(lab, args: str, rc: int = 0, env: str = "") -> str:
    """Run ``rtk iscsi ARGS`` in the guest (stderr to a file); returns stdout."""
    g = lab["guest"]
    out = g.run(f"{env} rtk iscsi {args} 2>/tmp/err; echo __RC=$?", timeout=300)
    got = int(out.rsplit("__RC=", 1)[1])
    err = g.run("cat /tmp/err")
    lab["outputs"].append(out + err)
    assert got == rc, f"rtk iscsi {args}: exit {got}, expected {rc}\n{out}\n{err}"
    lab["last_err"] = err
    return out.rsplit("__RC=", 1)[0]


SAN_ATTACH = (f"attach {PORTAL} {SAN} --role target --chap-user {CHAP[0]} "
              f"--mutual-user {MUTUAL[0]} --mutual-secret-env RTK_MUTUAL --json")
MUTUAL_ENV = f"RTK_MUTUAL={shlex.quote(MUTUAL[1])}"


def _sessions(lab) -> str:
    return lab["guest"].run("iscsiadm -m session 2>&1; iscsiadm -m node 2>&1", check=False)


def test_initiator_and_discovery(lab):
    g = lab["guest"]
    name = json.loads(rtk(lab, "initiator --json"))["initiator_name"]
    assert f"InitiatorName={name}" == g.run("cat /etc/iscsi/initiatorname.iscsi").strip()
    found = json.loads(rtk(lab, f"discover 10.0.2.2 --port {PORT} --json"))
    by_iqn = {t["iqn"]: t for t in found["targets"]}
    assert set(by_iqn) == {BDR, SAN}
    assert by_iqn[BDR]["advertised"] == [f"127.0.0.1:{PORT}"]
    assert (by_iqn[BDR]["host"], by_iqn[BDR]["port"]) == ("10.0.2.2", PORT)
    assert any("127.0.0.1" in n and f"using {PORTAL}" in n for n in found["notes"])
    # a closed port: the typed error, exit 11
    rtk(lab, "discover 10.0.2.2:3299", rc=11)
    assert "no iSCSI service answered" in lab["last_err"]


def test_wrong_chap_attaches_nothing(lab):
    rtk(lab, SAN_ATTACH.replace("--chap-user", "--chap-secret-file /tmp/wrong --chap-user"),
        rc=10, env=MUTUAL_ENV)
    assert "CHAP" in lab["last_err"] and "exit 24" in lab["last_err"]
    assert SAN not in _sessions(lab)  # no session, no node record left behind


def test_attach_maps_luns_by_content(lab):
    g, images = lab["guest"], lab["images"]
    san = json.loads(rtk(lab, SAN_ATTACH.replace("--chap-user",
                                                 "--chap-secret-file /tmp/chap --chap-user"),
                         env=MUTUAL_ENV))
    bdr = json.loads(rtk(lab, f"attach {PORTAL} {BDR} --role source --json"))
    assert [x["lun"] for x in san["luns"]] == [1] and san["role"] == "TARGET"
    assert [x["lun"] for x in bdr["luns"]] == [1, 2] and bdr["role"] == "SOURCE"
    lab["dev"] = {}
    for iqn, res in ((SAN, san), (BDR, bdr)):
        for x in res["luns"]:
            dev, lun = x["device"], x["lun"]
            lab["dev"][iqn, lun] = dev
            assert x["by_path"] == [f"/dev/disk/by-path/ip-{PORTAL}-iscsi-{iqn}-lun-{lun}"]
            head = g.run(f"head -c 13 {dev}; echo")
            assert head.strip() == f"RTK-{iqn.rsplit(':')[1].upper()}-LUN-{lun}", (dev, head)
            md5 = g.run(f"head -c {MiB} {x['by_path'][0]} | md5sum").split()[0]
            assert md5 == _md5(images[iqn, lun])
    listed = json.loads(rtk(lab, "list --json"))
    roles = {(s["target"], x["lun"]): x["role"] for s in listed for x in s["luns"] if x["device"]}
    assert roles == {(SAN, 1): "TARGET", (BDR, 1): "SOURCE", (BDR, 2): "SOURCE"}


def test_source_refuses_writes_target_accepts(lab):
    g, images = lab["guest"], lab["images"]
    src, dst = lab["dev"][BDR, 1], lab["dev"][SAN, 1]
    before = _md5(images[BDR, 1])
    assert g.run(f"blockdev --getro {src}").strip() == "1"
    out = g.run(f"dd if=/dev/zero of={src} bs=4096 count=1 oflag=direct 2>&1; echo rc=$?")
    assert "rc=1" in out and "Operation not permitted" in out, out
    out = g.run(f"printf RTK-WRITTEN | dd of={dst} bs=4096 seek=8 conv=sync,fsync "
                "oflag=direct 2>&1; echo rc=$?")
    assert "rc=0" in out, out
    with open(images[SAN, 1], "rb") as f:
        f.seek(8 * 4096)
        assert f.read(11) == b"RTK-WRITTEN"
    assert _md5(images[BDR, 1]) == before


def test_reservation_warns_for_target(lab):
    g, dst = lab["guest"], lab["dev"][SAN, 1]
    g.run(f"sg_persist --out --register --param-sark=0x1234abcd {dst} >/dev/null")
    try:
        again = json.loads(rtk(lab, SAN_ATTACH.replace(
            "--chap-user", "--chap-secret-file /tmp/chap --chap-user"), env=MUTUAL_ENV))
        assert any("already logged in" in n for n in again["notes"])
        assert any("0x1234abcd" in w and "cluster node" in w for w in again["warnings"])
    finally:
        g.run(f"sg_persist --out --register --param-rk=0x1234abcd --param-sark=0 {dst} "
              ">/dev/null")


def test_detach_cleans_up(lab):
    g = lab["guest"]
    for iqn in (SAN, BDR):
        rtk(lab, f"detach {iqn}")
    state = _sessions(lab)
    assert SAN not in state and BDR not in state, state
    for dev in lab["dev"].values():
        assert g.run(f"test -e {dev} && echo present || echo gone").strip() == "gone"
    assert "iscsi" not in g.run("ls /dev/disk/by-path/ 2>&1", check=False)
    assert json.loads(rtk(lab, "list --json")) == []
    rtk(lab, f"detach {BDR}", rc=12)


def test_set_initiator_name(lab):
    g = lab["guest"]
    rtk(lab, "initiator --set iqn.2026-11.lab.rtk:tester")
    assert g.run("cat /etc/iscsi/initiatorname.iscsi").strip() == \
        "InitiatorName=iqn.2026-11.lab.rtk:tester"
    rtk(lab, "initiator --set not-an-iqn", rc=2)
    # iscsid runs with the new name: a login still works
    rtk(lab, f"attach {PORTAL} {BDR} --role source --lun 2")
    assert "iqn.2026-11.lab.rtk:tester" in g.run("iscsiadm -m session -P 3 | grep Initiatorname")
    rtk(lab, f"detach {BDR}")


def test_secrets_never_written(lab):
    g = lab["guest"]
    pattern = "-e SECRET-chap -e SECRET-mutual -e SECRET-wrong"
    assert g.run(f"grep -r -l {pattern} /var/log/rtk /run/rtk; echo done",
                 check=False).strip() == "done"
    assert g.run(f"journalctl -b --no-pager | grep -c {pattern}", check=False).strip() == "0"
    assert "********" in g.run("cat /var/log/rtk/iscsi.log")
    for out in lab["outputs"]:
        assert "SECRET-" not in out
