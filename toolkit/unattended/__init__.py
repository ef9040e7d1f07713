"""Unattended restore and copy: the kernel command line's plan, run without a keyboard.

    plan = toolkit.unattended.plan.read_plan()                  # /proc/cmdline (+ rtk.plan= file)
    outcome = toolkit.unattended.run(plan)              # checks, writes, reports, done action
    outcome.status, outcome.action, outcome.reason

:mod:`~toolkit.unattended.runner` (the phases), :mod:`~toolkit.unattended.reporter`
(the JSON events for ``rtk.report=``), :mod:`~toolkit.unattended.console` (plain lines).
See docs/unattended.md, "Runner".
"""

from toolkit.unattended.console import Console
from toolkit.unattended.reporter import SCHEMA, ReportClient, RunReporter
from toolkit.unattended.runner import Outcome, decide_done, run

__all__ = ["SCHEMA", "Console", "Outcome", "ReportClient", "RunReporter", "decide_done", "run"]
