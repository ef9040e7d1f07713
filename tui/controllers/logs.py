"""The Logs screen's controller: the toolkit's reports and logs, the journal, the kernel."""

from __future__ import annotations

from toolkit.system import logs, paths
from tui.views.logs import LogListView, LogTextView


class LogsController:
    def __init__(self, app, log_dir: str = paths.LOG_DIR):
        self.app = app
        self.log_dir = log_dir

    def show(self) -> None:
        self.app.push(LogListView(self, logs.sources(self.log_dir)))

    def open(self, source: logs.LogSource) -> None:
        view = LogTextView(source.title, logs.read(source))
        self.app.push(view)
