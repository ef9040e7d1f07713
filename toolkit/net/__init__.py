"""Network settings of the live system, through systemd-networkd.

- :mod:`toolkit.net.nics`: the NICs (link, speed, MAC, driver, MTU, addresses, VLAN).
- :mod:`toolkit.net.settings`: what the technician asks for, validated (:class:`NetSettings`).
- :mod:`toolkit.net.networkd`: pure generation of ``.network``/``.netdev`` files.
- :mod:`toolkit.net.apply`: writes them under /run/systemd/network and waits for the result.
- :mod:`toolkit.net.ping`: a reachability test with the ``ping`` binary.

See docs/network.md for why systemd-networkd.
"""
