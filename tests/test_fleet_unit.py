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
