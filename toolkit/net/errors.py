"""The exceptions of the network code, with the ``rtk net`` exit codes they map to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1  # applied but not confirmed (timeout, networkctl failed), or no ping reply
EXIT_USAGE = 2  # argparse
EXIT_REFUSED = 5  # bad input: nothing was changed (same code as rtk copy)


class NetError(Exception):
    """A network operation failed; the message says what and what to check."""

    exit_code = EXIT_FAILED


class NetRefused(NetError):
    """The requested settings are invalid; nothing was changed."""

    exit_code = EXIT_REFUSED
