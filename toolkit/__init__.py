"""Recovery Toolkit core library: disks, iSCSI, copy, restore, network, reports.

Never imports urwid: the menu (package ``tui``) and the command line both use it.
"""


def __getattr__(name: str):
    """``toolkit.__version__``, read from the installed package's metadata when asked
    (importlib.metadata costs tens of milliseconds at every start of ``rtk``)."""
    if name != "__version__":
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("recovery-toolkit")
    except PackageNotFoundError:  # running from a source tree that was not installed
        return "0.0.0+source"
