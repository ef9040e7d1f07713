"""udpcast:// parsing, udp-receiver and udp-sender options (no network)."""

from __future__ import annotations

import pytest

from toolkit.restore import checks, multicast
from toolkit.restore import source as sourcemod

pytestmark = pytest.mark.unit
H = "ab" * 32


def test_parse_full_and_minimal():
    s = multicast.parse(f"udpcast://eth1@9002?sha256={H.upper()}&start_timeout=7")
    assert (s.portbase, s.interface, s.sha256, s.start_timeout) == (9002, "eth1", H, 7)
    m = multicast.parse("udpcast://9000")
    assert (m.interface, m.sha256, m.start_timeout) == (None, None, multicast.START_TIMEOUT)


@pytest.mark.parametrize("bad", ["udpcast://", "udpcast://9001", "udpcast://80",
                                 "udpcast://eth0@", "udpcast://9000?sha256=12",
                                 "udpcast://9000?foo=1", "udpcast://9000?start_timeout=x"])
def test_parse_refuses(bad):
    with pytest.raises(ValueError):
        multicast.parse(bad)


def test_receiver_argv():
    argv = multicast.receiver_argv(multicast.parse("udpcast://eno1@9000?receive_timeout=9"))
    assert argv[0] == "udp-receiver" and "--nokbd" in argv
    for opt, val in (("--portbase", "9000"), ("--interface", "eno1"),
                     ("--receive-timeout", "9"), ("--start-timeout", "600")):
        assert argv[argv.index(opt) + 1] == val


def test_sender_argv_as_fog_and_clonezilla():
    argv = multicast.sender_argv("/srv/a.img", receivers=4, max_wait=120, rate="600m",
                                 interface="eno1", portbase=9002)
    for opt, val in (("--min-receivers", "4"), ("--max-wait", "120"),
                     ("--max-bitrate", "600m"), ("--ttl", "1"), ("--file", "/srv/a.img")):
        assert argv[argv.index(opt) + 1] == val
    assert "--full-duplex" in argv and "--nokbd" in argv
    with pytest.raises(ValueError):
        multicast.sender_argv("/a", receivers=0)
    with pytest.raises(ValueError):
        multicast.sender_argv("/a", receivers=1, rate="fast")


def test_sha256_from_url_no_sidecar():
    assert sourcemod.is_multicast("udpcast://9000") and not sourcemod.is_url("udpcast://9000")
    assert checks.expected_sha256(f"udpcast://9000?sha256={H}", None) == (H, "the udpcast:// URL")
    assert checks.expected_sha256("udpcast://9000", None) == (None, "none")
    with pytest.raises(ValueError):
        checks.expected_sha256(f"udpcast://9000?sha256={H}", "cd" * 32)
    assert checks.image_inputs("udpcast://9000") == []


@pytest.mark.parametrize("url, key", [("udpcast://9000?size=%C2%B2", "size="),
                                      ("udpcast://9000?start_timeout=%C2%B2", "start_timeout="),
                                      ("udpcast://9000?receive_timeout=" + "9" * 4400,
                                       "receive_timeout="),
                                      ("udpcast://%C2%B2", "PORTBASE")])
def test_parse_odd_digits_say_which_field(url, key):
    with pytest.raises(ValueError) as e:  # was: invalid literal for int() ... '²'
        multicast.parse(url)
    assert "udpcast://" in str(e.value) and key in str(e.value)


@pytest.mark.parametrize("rdv", ["999.1.1.1", "999.999.999.999", "1.2.3"])
def test_parse_refuses_an_rdv_that_is_no_address(rdv):
    with pytest.raises(ValueError, match="rdv= expects an IPv4 address"):
        multicast.parse(f"udpcast://9000?rdv={rdv}")
    assert multicast.parse("udpcast://9000?rdv=10.0.0.5").rdv == "10.0.0.5"


def test_note_without_sha256_promises_nothing_it_cannot_check():
    from toolkit.restore import spool
    held = spool.Decision("auto", True, "/tmp", True, 10 << 30, 1 << 30, "size=")
    assert "a wrong image leaves the disk untouched" not in spool.note(held, sha256=False)
    assert "a wrong image leaves the disk untouched" in spool.note(held, sha256=True)
    live = spool.Decision("auto", False, "/tmp", True, 0, 1 << 30, "size=")
    assert "leaves no valid partition table" not in spool.note(live, sha256=False)


def test_a_nic_that_is_not_here_is_refused_at_plan_time():
    from toolkit.errors import Refused
    from toolkit.restore import spool
    with pytest.raises(Refused, match="no NIC named eno9 here"):
        spool.decide("udpcast://eno9@9000", 1 << 30)
    with pytest.raises(multicast.MulticastError, match="no NIC named eno9 here"):
        multicast.UdpcastSource("udpcast://eno9@9000")  # before udp-receiver runs


def test_sender_max_wait_and_retries():
    with pytest.raises(ValueError, match="--max-wait"):
        multicast.sender_argv("/srv/a.img", receivers=2, max_wait=-5)
    argv = multicast.sender_argv("/srv/a.img", receivers=2, retries_until_drop=30)
    assert argv[argv.index("--retries-until-drop") + 1] == "30"


# udp-sender 20120424's output (run in namespaces): two machines got it all, they
# disconnect after "Transfer complete."; two that left (SIGINT) disconnect before it
SENT = ("New connection from 10.232.0.11  (#0) 00000009\nNew connection from 10.232.0.12  "
        "(#1) 00000009\nStarting transfer: 00000009\nbytes= 30 000 000  re-xmits=0000000\n"
        "\nTransfer complete.\x07\nDisconnecting #0 (10.232.0.11)\nDisconnecting #1 "
        "(10.232.0.12)\n")
LEFT = ("New connection from 10.232.0.12  (#0) 00000009\nNew connection from 10.232.0.11  "
        "(#1) 00000009\nStarting transfer: 00000009\nbytes=  2 609 152  re-xmits=0\n\n"
        "Disconnecting #0 (10.232.0.12)\nDropping client #1 because of timeout\nbytes=  "
        "4 729 088\n\nTransfer complete.\x07\n")


def test_tally_counts_who_was_there_at_the_end():
    from toolkit.cli.fleet import Tally
    for text, want in ((SENT, 2), (LEFT, 0)):
        t = Tally()
        for i in range(0, len(text), 7):  # in pieces, as a pipe gives it
            t.feed(text[i:i + 7])
        assert t.at_end == want


def test_fleet_serve_options(tmp_path):
    from conftest import rtk
    img = tmp_path / "a.img"
    img.write_bytes(b"x" * 512)
    r = rtk("fleet", "serve", str(img), "--receivers", "2", "--max-wait", "-1")
    assert r.returncode == 2 and "--max-wait" in r.stderr and "sha256" not in r.stdout
    r = rtk("fleet", "serve", str(img), "--receivers", "2", "--interface", "eno9")
    assert r.returncode == 2 and "no such NIC here" in r.stderr


def test_fleet_serve_defaults_max_wait():
    import argparse

    from toolkit.cli import fleet
    p = argparse.ArgumentParser()
    fleet.register(p.add_subparsers())
    args = p.parse_args(["fleet", "serve", "a.img", "--receivers", "3"])
    assert args.max_wait == fleet.MAX_WAIT == 300 < multicast.START_TIMEOUT


def test_restore_refuses_udpcast_without_sha256(tmp_path):
    from conftest import rtk
    r = rtk("restore", "udpcast://9000?spool=never", str(tmp_path / "none"), "--yes",
            env_extra={"RTK_LOG_DIR": str(tmp_path)})
    assert r.returncode == 5, r.stderr
    assert "a multicast image needs its SHA-256" in r.stderr and "nothing was written" in r.stderr
