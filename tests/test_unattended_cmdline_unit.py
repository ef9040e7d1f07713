"""The kernel command line: next_arg() splitting, %-escapes, repeated parameters,
dracut's ip=/vlan=/nameserver= (table tests from dracut.cmdline(7)) -> NetSettings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from toolkit.net.errors import NetRefused
from toolkit.net.settings import NetSettings, validate
from toolkit.unattended.cmdline import (
    SPACE,
    Cmdline,
    CmdlineError,
    decode,
    network_from,
    parse_ip,
    parse_vlan,
    quote_param,
    split_args,
)

# --- the kernel's splitting --------------------------------------------------------


@pytest.mark.parametrize("line, expected", [
    (b"a=1 b", [(b"a", b"1"), (b"b", None)]),
    (b'rtk.x="a b" c', [(b"rtk.x", b"a b"), (b"c", None)]),           # quoted value
    (b'"rtk.x=a b" c', [(b"rtk.x", b"a b"), (b"c", None)]),           # quoted parameter
    (b'"flag with space"', [(b"flag with space", None)]),
    (b'rtk.x="" rtk.y=', [(b"rtk.x", b""), (b"rtk.y", b"")]),         # empty values
    (b'a=b"c d"', [(b"a", b'b"c d"')]),                               # inner quotes stay
    (b'rtk.x="a"b"', [(b"rtk.x", b'a"b')]),                           # no escapes
    (b'a="unterminated b=c', [(b"a", b"unterminated b=c")]),
    (b"a=b=c", [(b"a", b"b=c")]),                                     # first = splits
    (b"=x", [(b"=x", None)]),                                         # = at 0 does not count
    (b"  \t\na=1\r\x0b\x0cb=2\xa0c  \n", [(b"a", b"1"), (b"b", b"2"), (b"c", None)]),
    (b"a=1\0b=2", [(b"a", b"1")]),                                    # a C string
    (b'a "', [(b"a", None), (b"", None)]),
    (b"", []),
    (b"   ", []),
])
def test_split_args_like_next_arg(line, expected):
    assert split_args(line) == expected


def test_double_dash_ends_the_parameters():
    cl = Cmdline("rtk.mode=restore -- rtk.mode=copy single")
    assert cl.get("rtk.mode") == "restore"
    assert cl.init_args == ["rtk.mode=copy", "single"]


def test_kernel_splits_utf8_at_byte_a0_percent_encoding_avoids_it():
    # "à" is C3 A0 in UTF-8, and the kernel's isspace() counts 0xA0 as a space
    assert split_args("rtk.image=/à.img".encode()) == [(b"rtk.image", b"/\xc3"),
                                                       (b".img", None)]
    with pytest.raises(CmdlineError, match="rtk.image: not valid UTF-8"):
        Cmdline("rtk.image=/à.img").get("rtk.image")
    assert Cmdline("rtk.image=/%C3%A0.img").get("rtk.image") == "/à.img"
    assert Cmdline("rtk.image=/é.img").get("rtk.image") == "/é.img"  # C3 A9: no split


@pytest.mark.parametrize("value, decoded", [
    ("a%20b", "a b"), ("%22q%22", '"q"'), ("100%25", "100%"), ("%e2%82%ac", "€"), ("", ""),
])
def test_percent_escapes_are_decoded_after_splitting(value, decoded):
    assert Cmdline(f"rtk.x={value}").get("rtk.x") == decoded


@pytest.mark.parametrize("value, message", [
    ("50%off", "rtk.x: '%' must start an escape %XX"),
    ("%4", "rtk.x: '%' must start an escape"),
    ("%ff", "rtk.x: not valid UTF-8"),
])
def test_bad_escapes_name_the_parameter(value, message):
    with pytest.raises(CmdlineError, match=message):
        Cmdline(f"rtk.x={value}").get("rtk.x")


def test_repeated_last_wins_or_accumulates_and_flags():
    cl = Cmdline("rtk.done=menu nameserver=1.1.1.1 rtk.done=shell nameserver=9.9.9.9 rtk.grow")
    assert cl.get("rtk.done") == "shell"
    assert cl.get_all("nameserver") == ["1.1.1.1", "9.9.9.9"]
    assert cl.get("rtk.absent") is None and cl.get_all("rtk.absent") == []
    assert "rtk.grow" in cl
    with pytest.raises(CmdlineError, match="rtk.grow needs a value: write rtk.grow=VALUE"):
        cl.get("rtk.grow")


def test_reads_proc_cmdline_or_a_given_path(tmp_path):
    f = tmp_path / "cmdline"
    f.write_bytes(b'BOOT_IMAGE=/live/vmlinuz boot=live "rtk.report=http://h/r x"\n')
    assert Cmdline(path=str(f)).raw("rtk.report") == "http://h/r x"
    assert "secret" not in repr(Cmdline("rtk.target=iscsi:u:secret@h::::iqn.2001-05.a:b"))


# --- property tests -----------------------------------------------------------------

NAMES = st.sampled_from(["rtk.mode", "rtk.image", "rtk.disk", "rtk.source", "ip", "quiet"])
VALUES = st.none() | st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]),
                             max_size=20)
SPACES = st.binary(min_size=1, max_size=3).map(
    lambda b: bytes(sorted(SPACE)[x % len(SPACE)] for x in b))


@st.composite
def joined(draw):
    params = draw(st.lists(st.tuples(NAMES, VALUES), max_size=6))
    parts = []
    for name, value in params:
        text = quote_param(name, value)
        if value is not None and draw(st.booleans()):
            text = '"' + text.replace('"', "") + '"'  # quote the whole parameter instead
        parts.append(text.encode())
    seps = [draw(SPACES) for _ in range(len(parts) + 1)]
    line = seps[0] + b"".join(p + s for p, s in zip(parts, seps[1:], strict=True))
    return params, line


@given(joined())
def test_round_trip_through_the_kernels_quoting(case):
    params, line = case
    cl = Cmdline(line)
    assert [(n, None if v is None else decode(v, n)) for n, v in cl.params] == params
    for name in {n for n, _ in params}:
        values = [v for n, v in params if n == name]
        if None not in values:
            assert cl.get(name) == values[-1]
            assert cl.get_all(name) == values


@given(st.binary(max_size=60))
def test_split_args_takes_any_bytes(raw):
    for param, value in split_args(raw):
        assert b"\0" not in param and (value is None or b"\0" not in value)


@given(st.lists(st.tuples(st.from_regex(r"[a-z.]{1,8}", fullmatch=True),
                          st.from_regex(r"[a-z0-9:/.]{0,8}", fullmatch=True)), max_size=5),
       st.lists(SPACES, min_size=6, max_size=6))
def test_spacing_does_not_matter(params, spaces):
    line = b"".join(s + f"{n}={v}".encode() for (n, v), s in zip(params, spaces, strict=False))
    assert split_args(line + spaces[-1]) == [(n.encode(), v.encode()) for n, v in params]


# --- ip= (dracut.cmdline(7)) ------------------------------------------------------------

S = NetSettings


@pytest.mark.parametrize("value, expected", [
    ("dhcp", None), ("on", None), ("any", None), ("dhcp6", None), ("auto6", None),
    ("either6", None), ("single-dhcp", None),
    ("eth0:dhcp", S("eth0")), ("eth0:on", S("eth0")), ("eth0:any", S("eth0")),
    ("eth0:dhcp6", S("eth0")), ("eth0:auto6", S("eth0")),
    ("ens3:dhcp:9000", S("ens3", mtu=9000)), ("ens3:dhcp:", S("ens3")),
    ("192.168.50.101::192.168.50.1:255.255.255.0::eth0:off",
     S("eth0", "static", "192.168.50.101/24", "192.168.50.1")),
    ("192.168.50.101::192.168.50.1:255.255.255.0:client:eth0:none:1500",
     S("eth0", "static", "192.168.50.101/24", "192.168.50.1", mtu=1500)),
    ("10.0.0.5::10.0.0.1:24::eth0:none::", S("eth0", "static", "10.0.0.5/24", "10.0.0.1")),
    ("10.0.0.5:::255.255.0.0::eth0:none", S("eth0", "static", "10.0.0.5/16")),
    ("10.0.0.5/22::10.0.0.1:::eth0:none", S("eth0", "static", "10.0.0.5/22", "10.0.0.1")),
    ("10.0.0.5::10.0.0.1:255.255.255.0::eth0:none:10.0.0.53:10.0.0.54",
     S("eth0", "static", "10.0.0.5/24", "10.0.0.1", dns=("10.0.0.53", "10.0.0.54"))),
    ("[2001:DB8::2]::[2001:DB8::1]:64::eth0:none",
     S("eth0", "static", "2001:DB8::2/64", "2001:DB8::1")),
    ("[2001:DB8::2]::[2001:DB8::1]:64::eth0:none:[2001:DB8::53]",
     S("eth0", "static", "2001:DB8::2/64", "2001:DB8::1", dns=("2001:DB8::53",))),
    ("::::host:eth0:dhcp", S("eth0")),
])
def test_ip_dracut_forms(value, expected):
    assert parse_ip(value) == expected


@pytest.mark.parametrize("value, message", [
    ("bogus", "ip=bogus: expected dhcp, dhcp6, on"),
    ("eth0:link6", "link6 (link-local only) is not supported"),
    ("eth0:dhcp:1500:52:54:00:12:34:56", "setting a MAC address is not supported"),
    ("10.0.0.5::10.0.0.1:24::eth0:none:1500:52:54:00:12:34:56", "MAC address"),
    ("eth0:dhcp:big", "MTU 'big' is not a number"),
    (":dhcp", "no interface before :dhcp"),
    ("10.0.0.5::10.0.0.1:24::eth0", "7 fields, got 6"),
    ("10.0.0.5:10.0.0.9:10.0.0.1:24::eth0:none", "<peer> (point-to-point) is not supported"),
    ("10.0.0.5::10.0.0.1:24:::none", "name the <interface>"),
    ("10.0.0.5::10.0.0.1:24::eth0:ibft", "ibft is not supported"),
    ("10.0.0.5::10.0.0.1:24::eth0:dhcp", "autoconf 'dhcp' with a client IP"),
    ("::10.0.0.1:24::eth0:none", "needs the <client-IP>"),
    ("10.0.0.5::10.0.0.1:::eth0:none", "needs the <netmask>"),
    ("10.0.0.5::10.0.0.1:255.0.255.0::eth0:none", "netmask '255.0.255.0' is neither"),
    ("[2001:db8::2::eth0:none", "unbalanced"),
    ("[2001:db8::2]x::eth0:none", "unbalanced"),
    ("10.0.0.5::10.0.0.1:24::eth0:none:1.1.1.1:2.2.2.2:3.3.3.3", "expected [<mtu>]"),
])
def test_ip_errors_name_the_value_and_the_rule(value, message):
    with pytest.raises(CmdlineError, match=message.replace("[", r"\[").replace("(", r"\(")
                       .replace(")", r"\)")) as e:
        parse_ip(value)
    assert str(e.value).startswith(f"ip={value}")


def test_ip_settings_go_through_net_validate():
    s = parse_ip("10.0.0.5::10.1.0.1:255.255.255.0::eth0:none")
    with pytest.raises(NetRefused, match="outside the subnet"):
        validate(s, ["eth0"])
    with pytest.raises(NetRefused, match="MTU 100 is out of range"):
        validate(parse_ip("eth0:dhcp:100"), ["eth0"])


@pytest.mark.parametrize("value, expected", [
    ("vlan0005:eth0", ("vlan0005", "eth0", 5)), ("vlan5:eth0", ("vlan5", "eth0", 5)),
    ("eth0.0005:eth0", ("eth0.0005", "eth0", 5)), ("eth0.5:eth0", ("eth0.5", "eth0", 5)),
])
def test_vlan_names(value, expected):
    assert parse_vlan(value) == expected


@pytest.mark.parametrize("value", ["foo:eth0", "eth1.5:eth0", "vlan5", "vlan5:", "vlanx:eth0"])
def test_vlan_errors(value):
    with pytest.raises(CmdlineError, match=f"vlan={value}: expected vlan=<vlanname>:<phys-dev>"):
        parse_vlan(value)


def test_network_from_cmdline_vlan_mtu_nameservers_last_ip_wins():
    cl = Cmdline("ip=dhcp vlan=ens3.42:ens3 ip=ens3:dhcp:9000 ip=ens3:dhcp:1500 "
                 "ip=10.42.0.5::10.42.0.1:255.255.255.0::ens3.42:none:9000 "
                 "nameserver=10.42.0.53 nameserver=2001:db8::53 vlan=vlan7:ens4")
    net = network_from(cl)
    assert net["nameservers"] == ("10.42.0.53", "2001:db8::53")
    dns = net["nameservers"]
    assert net["network"] == (
        S("ens3", mtu=1500, dns=dns),
        S("ens3", "static", "10.42.0.5/24", "10.42.0.1", dns=dns, mtu=9000, vlan=42),
        S("ens4", vlan=7, dns=dns))
    assert [validate(s, ["ens3", "ens4"]).iface for s in net["network"]] == \
        ["ens3", "ens3.42", "ens4.7"]
    assert network_from(Cmdline("ip=dhcp quiet")) == {}
    with pytest.raises(CmdlineError, match="nameserver=dns.example: not an IPv4 or IPv6"):
        network_from(Cmdline("nameserver=dns.example"))
