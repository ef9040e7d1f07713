"""Recovery Toolkit core library: disks, iSCSI, copy, restore, network, reports.

Never imports urwid: the menu (package ``tui``) and the command line both use it.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("recovery-toolkit")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+source"
