"""rtk net on the host: validation, networkd file generation, the parsers fed with
real output captured in the live guest (tests/fixtures/net), and apply() with
networkd replaced by a fake."""

from __future__ import annotations

import importlib
import subprocess
from pathlib import Path

import pytest

from toolkit.cli import main as cli
from toolkit.net import apply as applymod
from toolkit.net import networkd, nics, ping, resolv
from toolkit.net.errors import NetError, NetRefused
from toolkit.net.settings import NetSettings, validate, vlan_ifname
from toolkit.system import tools

FIX = Path(__file__).parent / "fixtures" / "net"
NICS = ["ens3"]


def fix(name: str) -> str:
    return (FIX / name).read_text()


def sysfs_fixture() -> dict:
    """sysfs-ens3.txt: key=value lines, then the driver link and the device path."""
    lines = fix("sysfs-ens3.txt").splitlines()
    facts = dict(ln.split("=", 1) for ln in lines if "=" in ln)
    facts = {k: (None if v.startswith("<") else v) for k, v in facts.items()}
    facts["driver"] = lines[-2].rsplit("/", 1)[-1]
    facts["device"] = True
    return facts


# --- validation -----------------------------------------------------------------

@pytest.mark.parametrize("kw, message", [
    (dict(nic="eth9"), "unknown NIC 'eth9': the NICs here are ens3"),
    (dict(mode="static"), "static needs an address"),
    (dict(mode="static", address="10.0.2.50"), "has no prefix length"),
    (dict(mode="static", address="10.0.2.50/33"), "bad prefix length /33"),
    (dict(mode="static", address="10.0.2.50/0"), "bad prefix length /0"),
    (dict(mode="static", address="10.0.2.50/x"), "bad prefix length /x"),
    (dict(mode="static", address="10.0.2.500/24"), "bad address '10.0.2.500'"),
    (dict(mode="static", address="10.0.2.0/24"), "is the network address of 10.0.2.0/24"),
    (dict(mode="static", address="10.0.2.255/24"), "is the broadcast address"),
    (dict(mode="static", address="10.0.2.50/24", gateway="10.0.3.1"),
     "gateway 10.0.3.1 is outside the subnet 10.0.2.0/24 of 10.0.2.50/24"),
    (dict(mode="static", address="10.0.2.50/24", gateway="10.0.2.50"), "own address"),
    (dict(mode="static", address="10.0.2.50/24", gateway="fe80::1"), "is IPv6"),
    (dict(mode="static", address="10.0.2.50/24", dns=("10.0.2.3", "dns.example")),
     "bad DNS server 'dns.example'"),
    (dict(mtu=10000), "MTU 10000 is out of range 576..9216"),
    (dict(mtu=575), "MTU 575 is out of range 576..9216"),
    (dict(vlan=0), "VLAN id 0 is out of range 1..4094"),
    (dict(vlan=4095), "VLAN id 4095 is out of range 1..4094"),
    (dict(gateway="10.0.2.2"), "dhcp takes no --address or --gateway"),
    (dict(mode="bootp"), "unknown mode 'bootp'"),
    (dict(mode="static", address="fd00::5/64", mtu=1000), "below 1280"),
])
def test_validate_refuses_with_a_specific_message(kw, message):
    s = NetSettings(**{"nic": "ens3", **kw})
    with pytest.raises(NetRefused, match=None) as e:
        validate(s, NICS)
    assert message in str(e.value)
    assert e.value.exit_code == 5


def test_validate_normalizes():
    s = validate(NetSettings("ens3", "static", "10.0.2.50/24", "10.0.2.2", ("10.0.2.3",),
                             mtu=9216, vlan=4094), NICS)
    assert (s.address, s.gateway, s.mtu, s.iface) == ("10.0.2.50/24", "10.0.2.2", 9216,
                                                       "ens3.4094")
    assert validate(NetSettings("ens3", "static", "fd00::0005/64", "fd00::1"), NICS).address \
        == "fd00::5/64"
    assert validate(NetSettings("ens3", "static", "10.0.2.50/32"), NICS).address \
        == "10.0.2.50/32"
    assert validate(NetSettings("ens3", mtu=576), NICS).mtu == 576


def test_vlan_names_fit_ifnamsiz():
    assert vlan_ifname("ens3", 42) == "ens3.42"
    assert vlan_ifname("enx525400123456", 42) == "vlan42"  # 18 chars would not fit


# --- networkd files ---------------------------------------------------------------

def test_static_network_file():
    s = NetSettings("ens3", "static", "10.0.2.50/24", "10.0.2.2", ("10.0.2.3",), mtu=1400)
    files = networkd.render([s])
    assert list(files) == ["10-rtk-ens3.network"]
    text = files["10-rtk-ens3.network"]
    assert "[Match]\nName=ens3\n" in text
    assert "[Link]\nMTUBytes=1400\n" in text
    assert "[Network]\nAddress=10.0.2.50/24\nGateway=10.0.2.2\n" in text
    assert "DNS=10.0.2.3\n" in text and "DHCP" not in text
    # sorts before the image's default, so networkd picks it for ens3
    assert sorted([*files, "90-rtk-dhcp.network"])[0] == "10-rtk-ens3.network"


def test_dhcp_restores_the_original_mtu():
    text = networkd.render([NetSettings("ens3")], {"ens3": 1500})["10-rtk-ens3.network"]
    assert "MTUBytes=1500" in text and "DHCP=yes" in text and "UseDNS" not in text
    text = networkd.render([NetSettings("ens3", dns=("10.0.2.3",))])["10-rtk-ens3.network"]
    assert "[Link]" not in text and "DNS=10.0.2.3" in text and "UseDNS=no" in text


def test_vlan_files_and_parent():
    v = NetSettings("ens3", "static", "10.0.42.10/24", mtu=9000, vlan=42)
    files = networkd.render([v], {"ens3": 1500})
    assert sorted(files) == ["10-rtk-ens3.42.netdev", "10-rtk-ens3.42.network",
                             "10-rtk-ens3.network"]
    netdev = files["10-rtk-ens3.42.netdev"]
    assert "[NetDev]\nName=ens3.42\nKind=vlan\nMTUBytes=9000\n" in netdev
    assert "[VLAN]\nId=42\n" in netdev
    parent = files["10-rtk-ens3.network"]
    assert "VLAN=ens3.42" in parent and "DHCP=yes" in parent  # keeps the default DHCP
    assert "MTUBytes=9000" in parent  # raised: the VLAN's frames must fit the parent
    assert "Address=10.0.42.10/24" in files["10-rtk-ens3.42.network"]
    # the parent's own static settings and its VLAN live together; later settings win
    own = NetSettings("ens3", "static", "10.0.2.50/24", mtu=1400)
    files = networkd.render([own, v, NetSettings("ens3", "static", "10.0.2.51/24")])
    assert "Address=10.0.2.51/24" in files["10-rtk-ens3.network"]
    assert "VLAN=ens3.42" in files["10-rtk-ens3.network"]


# --- parsers on real guest output ---------------------------------------------------

def test_nic_from_real_ip_json_and_sysfs():
    ip = nics.parse_ip_json(fix("ip-addr-dhcp.json"))
    assert sorted(ip) == ["ens3", "lo"]
    n = nics.nic_from("ens3", ip["ens3"], sysfs_fixture(), speed=0)
    assert (n.mac, n.driver, n.mtu, n.carrier, n.link_up) == (
        "52:54:00:12:34:56", "virtio_net", 1500, True, True)
    assert n.speed_mbps is None  # virtio reports -1
    assert n.addresses[0] == "10.0.2.15/24" and "10.0.2.15/24" in n.dhcp_addresses
    assert not any(a.startswith("fe80") for a in n.addresses)  # link-local left out
    assert n.to_dict()["physical"] is True


def test_static_mtu_and_vlan_from_real_ip_json():
    ip = nics.parse_ip_json(fix("ip-addr-static-mtu1400.json"))["ens3"]
    n = nics.nic_from("ens3", ip, {})
    assert (n.addresses, n.dhcp_addresses, n.mtu) == (["10.0.2.50/24"], [], 1400)
    ip = nics.parse_ip_json(fix("ip-addr-vlan42.json"))
    v = nics.nic_from("ens3.42", ip["ens3.42"], {"operstate": "up", "carrier": "1"})
    assert (v.kind, v.vlan_id, v.vlan_parent, v.mtu) == ("vlan", 42, "ens3", 1300)
    assert v.addresses == ["192.168.42.10/24"]
    assert "vlan 42 on ens3" in importlib.import_module("toolkit.cli.net").nic_line(v)


def test_ping_parser_real_output():
    ok = ping.parse_ping("10.0.2.2", fix("ping-ok.txt"), 0)
    assert (ok.ok, ok.transmitted, ok.received, ok.address) == (True, 3, 3, "10.0.2.2")
    assert ok.rtt_avg_ms > 0 and ok.loss_percent == 0 and ok.error is None
    lost = ping.parse_ping("10.0.2.9", fix("ping-no-reply.txt"), 1)
    assert (lost.ok, lost.transmitted, lost.loss_percent, lost.error) == (False, 2, 100.0, None)
    bad = ping.parse_ping("nosuch.invalid", fix("ping-unknown-host.txt"), 2)
    assert not bad.ok and bad.error == "nosuch.invalid: Name or service not known"
    assert bad.line() == "nosuch.invalid: nosuch.invalid: Name or service not known"


def test_resolv_from_real_networkd_link_state(tmp_path):
    assert resolv.parse_link_state(fix("netif-link-dhcp.txt")) == (["10.0.2.3"], [])
    conf = tmp_path / "resolv.conf"
    assert resolv.write(conf, ["10.0.2.3", "10.0.2.4", "10.0.2.5", "10.0.2.6"], ["lab"])
    assert conf.read_text().splitlines()[1:] == [
        "search lab", "nameserver 10.0.2.3", "nameserver 10.0.2.4", "nameserver 10.0.2.5"]
    link = tmp_path / "link"
    link.symlink_to(conf)
    assert resolv.write(link, ["10.0.2.9"]) is False  # systemd-resolved's: left alone


# --- apply with a fake networkd ---------------------------------------------------------

class FakeNet:
    """Plays networkd: after a reload, the interface shows what its file says."""

    def __init__(self, tmp_path):
        self.root = tmp_path
        self.now = {"ens3": applymod.Observed(True, ["10.0.2.15/24"], ["10.0.2.15/24"], 1500,
                                              True)}
        self.reloads: list[list[str]] = []
        self.obey = True

    def reload(self, ifaces):
        self.reloads.append(ifaces)
        if not self.obey:
            return "sighup"
        for c in applymod.load_state(self.root / applymod.STATE_FILE)[0]:
            if c.mode == "static":
                self.now[c.iface] = applymod.Observed(True, [c.address], [], c.mtu or 1500, True)
            else:
                self.now[c.iface] = applymod.Observed(True, ["10.0.2.15/24"], ["10.0.2.15/24"],
                                                      c.mtu or 1500, True)
        return "sighup"

    def look(self, iface):
        return self.now.get(iface, applymod.Observed())

    def apply(self, s, **kw):
        return applymod.apply_settings(s, root=str(self.root), known_nics=["ens3"],
                                       reload=self.reload, release=lambda nic: False,
                                       look=self.look, sleep=lambda _s: None, **kw)


def test_apply_static_then_dhcp(tmp_path):
    net = FakeNet(tmp_path)
    r = net.apply(NetSettings("ens3", "static", "10.0.2.50/24", "10.0.2.2", ("10.0.2.3",),
                              mtu=1400))
    assert (r.iface, r.addresses, r.mtu, r.dns_written) == ("ens3", ["10.0.2.50/24"], 1400, True)
    netdir = tmp_path / applymod.NETWORK_DIR
    assert [p.name for p in netdir.iterdir()] == ["10-rtk-ens3.network"]
    assert "nameserver 10.0.2.3" in (tmp_path / resolv.RESOLV_CONF).read_text()
    r = net.apply(NetSettings("ens3", "dhcp"))
    assert r.addresses == ["10.0.2.15/24"] and r.mtu == 1500  # the MTU before rtk touched it
    assert "MTUBytes=1500" in (netdir / "10-rtk-ens3.network").read_text()


def test_apply_refused_changes_nothing(tmp_path):
    net = FakeNet(tmp_path)
    with pytest.raises(NetRefused, match="MTU 10000"):
        net.apply(NetSettings("ens3", "static", "10.0.2.50/24", mtu=10000))
    assert not (tmp_path / "run").exists() and net.reloads == []


def test_apply_vlan_then_remove(tmp_path):
    net = FakeNet(tmp_path)
    r = net.apply(NetSettings("ens3", "static", "10.0.42.10/24", vlan=42))
    assert r.iface == "ens3.42"
    netdir = tmp_path / applymod.NETWORK_DIR
    assert len(list(netdir.iterdir())) == 3
    # settings for the VLAN interface by its name keep it a VLAN of ens3
    r = applymod.apply_settings(NetSettings("ens3.42", "static", "10.0.42.11/24"),
                                root=str(tmp_path), known_nics=["ens3", "ens3.42"],
                                reload=net.reload, release=lambda n: False, look=net.look,
                                sleep=lambda _s: None)
    assert r.settings.vlan == 42 and "Id=42" in (netdir / "10-rtk-ens3.42.netdev").read_text()
    deleted = []
    applymod.remove_vlan("ens3.42", root=str(tmp_path), reload=net.reload,
                         delete=deleted.append)
    assert deleted == ["ens3.42"]
    assert [p.name for p in netdir.iterdir()] == ["10-rtk-ens3.network"]
    with pytest.raises(NetRefused, match="not a VLAN interface made by rtk net"):
        applymod.remove_vlan("ens3.42", root=str(tmp_path), reload=net.reload)


def test_apply_timeout_says_why(tmp_path):
    net = FakeNet(tmp_path)
    net.obey = False
    net.now["ens3"].carrier = False
    with pytest.raises(NetError, match="no link .no carrier.: check the cable"):
        net.apply(NetSettings("ens3", "static", "10.0.2.50/24"), timeout=0)
    net.now["ens3"].carrier = True
    net.now["ens3"].dhcp_addresses = []
    with pytest.raises(NetError, match="no DHCP lease on ens3"):
        net.apply(NetSettings("ens3", "dhcp"), timeout=0)


def _files(root) -> dict[str, str]:
    """Every file under ``root`` with its text (what an apply left behind)."""
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_apply_without_systemctl_leaves_no_file(tmp_path, monkeypatch):
    """No networkctl, no systemctl (PATH holds neither): the reload fails with the tool
    named, and the apply takes back every file it wrote (files and directories)."""
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    net = FakeNet(tmp_path / "root")
    (tmp_path / "root").mkdir()
    with pytest.raises(NetError, match="systemctl is not installed .systemd."):
        applymod.apply_settings(NetSettings("ens3", "dhcp", dns=("10.0.2.3",)),
                                root=str(net.root), known_nics=["ens3"],
                                release=lambda nic: False, look=net.look,
                                sleep=lambda _s: None)
    assert list((tmp_path / "root").iterdir()) == []


def test_failed_apply_puts_back_the_files_of_the_last_one(tmp_path):
    """A working apply, then one that fails (reload, or the timeout): the files, the
    state and resolv.conf are the working one's again, and networkd re-reads them."""
    net = FakeNet(tmp_path)
    net.apply(NetSettings("ens3", "static", "10.0.2.50/24", "10.0.2.2", ("10.0.2.3",)))
    before = _files(tmp_path)

    def broken(ifaces):
        raise NetError("cannot reload systemd-networkd: systemctl is not installed")
    with pytest.raises(NetError, match="cannot reload"):
        applymod.apply_settings(NetSettings("ens3", "static", "10.0.2.60/24", vlan=7,
                                            dns=("10.0.2.4",)),
                                root=str(tmp_path), known_nics=["ens3"], reload=broken,
                                release=lambda nic: False, look=net.look,
                                sleep=lambda _s: None)
    assert _files(tmp_path) == before
    net.obey = False
    reloads = len(net.reloads)
    with pytest.raises(NetError, match="has MTU 1500, not 1400"):
        net.apply(NetSettings("ens3", "static", "10.0.2.70/24", mtu=1400), timeout=0)
    assert _files(tmp_path) == before
    assert len(net.reloads) == reloads + 2  # the new files, then the old ones again


def fake_runner(monkeypatch, status=lambda cmd: 0):
    """Replace the one runner (toolkit.system.tools.run, which systemctl's wrapper uses
    too) by one that records each command line and ends with ``status(cmd)``, failing as
    the runner does (ToolError when ``check``); the command lines it was given."""
    calls = []

    def run(cmd, *, check=True, timeout=None, **kw):
        calls.append(list(cmd))
        rc = status(cmd)
        if check and rc:
            raise tools.failure(cmd, rc, "Failed to connect to system bus")
        return subprocess.CompletedProcess(cmd, rc, "", "")
    monkeypatch.setattr(tools, "run", run)
    return calls


def test_release_from_ifupdown(tmp_path, monkeypatch):
    calls = fake_runner(monkeypatch)
    (tmp_path / "ifstate.ens3").write_text("ens3\n")
    (tmp_path / "ifstate.ens4").write_text("")
    assert applymod.release_from_ifupdown("ens3", str(tmp_path))
    assert not applymod.release_from_ifupdown("ens4", str(tmp_path))
    assert calls == [["ifdown", "--force", "ens3"]]


def test_reload_falls_back_to_sighup_without_dbus(monkeypatch):
    calls = fake_runner(monkeypatch, lambda cmd: 1 if cmd[0] == "networkctl" else 0)
    assert applymod.reload_networkd(["ens3"]) == "sighup"
    assert [c[0] for c in calls] == ["networkctl", "systemctl"]
    assert calls[1] == ["systemctl", "kill", "--signal=SIGHUP", "--kill-whom=main",
                        "systemd-networkd.service"]


# --- command line -----------------------------------------------------------------------

def test_cli_parses_and_refuses_before_touching_anything(capsys, monkeypatch):
    monkeypatch.setattr(nics, "nic_names", lambda root=nics.SYS_NET: ["ens3"])
    args = cli.build_parser().parse_args(
        ["net", "set", "ens3", "static", "--address", "10.0.2.50/24", "--gateway", "10.0.2.2",
         "--dns", "10.0.2.3", "10.0.2.4", "--mtu", "1400", "--vlan", "42"])
    assert (args.mode, args.dns, args.mtu, args.vlan) == ("static", ["10.0.2.3", "10.0.2.4"],
                                                         1400, 42)
    assert cli.main(["net", "set", "ens3", "static", "--address", "10.0.2.50/24",
                     "--mtu", "10000"]) == 5
    assert "MTU 10000 is out of range 576..9216" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        cli.main(["net", "ping", "10.0.2.2", "--count", "0"])
    assert e.value.code == 2
