"""The exceptions of the network code, with the ``rtk net`` exit codes they map to."""

from __future__ import annotations

from toolkit.exitcodes import EXIT_FAILED, EXIT_REFUSED


class NetError(Exception):
    """A network operation failed (applied but not confirmed, networkctl failed, no ping
    reply); the message says what and what to check."""

    exit_code = EXIT_FAILED


class NetRefused(NetError):
    """The requested settings are invalid (bad input): nothing was changed."""

    exit_code = EXIT_REFUSED
