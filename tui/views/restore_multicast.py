"""Restore from a multicast stream: the form (NIC, port base, SHA-256, how long to wait
for the sender, the image's size) and what the confirmation says about a stream that is read once.

Views only build widgets; :mod:`tui.controllers.restore` checks the fields, builds the
``udpcast://`` location and runs the restore (docs/fleet.md).
"""

from __future__ import annotations

from tui.widgets.form import Field, Form


class MulticastForm(Form):
    title = "Restore: multicast stream (udpcast)"
    interface = Field("Interface (NIC)")
    port = Field("Port base", "9000")
    sha256 = Field("Image SHA-256", required="Type the image's SHA-256 (rtk fleet serve "
                                             "prints it): a live stream is read only once, "
                                             "and its hash is the only proof it was the "
                                             "planned image.")
    wait = Field("Wait for sender (s)", "600")
    size = Field("Image size in bytes (optional)")  # size=: rtk fleet serve prints it

    def __init__(self, on_submit, nics: list[str], **values):
        """``on_submit(form)``; ``nics``: the NICs of this machine, shown as a hint."""
        here = ", ".join(nics) if nics else "none found"
        super().__init__(
            "Receive an image that a server sends to many machines at once (udp-sender, "
            "e.g. rtk fleet serve IMAGE --receivers N). Start the sender first: a machine "
            "that joins after it began sending is not let in. Raw images only (plain, gzip, "
            f"xz, zstd). Interface: the NIC on the sender's network (NICs here: {here}; "
            "empty: udp-receiver's default). Image size: the size= rtk fleet serve prints "
            "(optional: it lets a small image be held whole first).", "Choose the target disk",
            on_submit, **values)


def held(image) -> bool:
    """Whether a ``udpcast://`` image is held whole before writing (its plan said so)."""
    return image.spool is not None and image.spool.hold


def stream_note(image) -> list[str]:
    """What the confirmation says about a ``udpcast://`` image (nothing for others), after
    the plan's own line on where it is held (or that there is no room)."""
    if not image.location.startswith("udpcast://"):
        return []
    if held(image):
        return ["A live stream is read once: it is received whole before this disk is "
                "touched (so this disk does not slow the sender down), then its SHA-256, "
                "format, size and sector size are checked and only then is it written."]
    return ["A live stream is read once: its format, size and sector size are checked "
            "from its first MiB before anything is written; its SHA-256 after the rest is "
            "written and before the first MiB. A wrong stream overwrites this disk and "
            "leaves it without a partition table."]


def waiting_text(interface: str | None, port: int, timeout: int) -> str:
    nic = interface or "udp-receiver's default NIC"
    return (f"Waiting for the sender on {nic} port {port} (up to {timeout} s; Esc stops: "
            "nothing is written before the stream arrives)")


def joined_text(sender: str, interface: str | None, port: int) -> str:
    nic = f"{interface}, " if interface else ""
    return (f"Joined the sender at {sender} ({nic}port {port}): it starts when its "
            "machines have joined (its --min-receivers or --max-wait)")
