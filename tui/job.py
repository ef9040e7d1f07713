"""A long job behind a progress screen (Disk Copy, Restore): it runs in a worker thread
that never touches widgets; its progress and its outcome come back on the UI thread
(:meth:`tui.app.App.call_from_thread`); stopping it asks first."""

from __future__ import annotations

import threading
from collections.abc import Callable


class Job:
    """``start(name, run, done, failed)``: ``run(cancel)`` in a thread, then ``done(result)``
    on the UI thread, or ``failed(exception)`` for an exception in ``errors``;
    ``start_behind(view, ...)`` the same behind a progress view. ``confirm_cancel()`` asks
    with ``question``/``explanation``, then sets ``cancel``."""

    def __init__(self, app, question: str, explanation: str, keep: str):
        self.app = app
        self.question, self.explanation, self.keep = question, explanation, keep
        self.worker: threading.Thread | None = None
        self.cancel = threading.Event()
        self.result: object | None = None  # of the last start_behind(), once it is done

    def progress_to(self, view) -> Callable:
        """A progress callback (worker thread) that updates ``view`` (UI thread)."""
        return lambda p: self.app.call_from_thread(lambda: view.update(p))

    def start(self, name: str, run: Callable[[threading.Event], object],
              done: Callable[[object], None], failed: Callable[[BaseException], None],
              errors: tuple[type[BaseException], ...] = (Exception,)) -> None:
        self.cancel = threading.Event()
        cancel = self.cancel

        def work() -> None:
            try:
                result = run(cancel)
            except errors as e:
                error = e  # `e` is unbound once the except block ends
                self.app.call_from_thread(lambda: failed(error))
                return
            self.app.call_from_thread(lambda: done(result))

        self.worker = threading.Thread(target=work, name=name, daemon=True)
        self.worker.start()

    def start_behind(self, view, name: str, run: Callable[[Callable, threading.Event], object],
                     done: Callable[[object], None], failed: Callable[[BaseException], None],
                     errors: tuple[type[BaseException], ...] = (Exception,)) -> None:
        """Show the progress ``view``, then :meth:`start` ``run(progress, cancel)``, its
        progress going to ``view.update``. At the end ``result`` holds the result and a
        "Stop?" question still open is closed, then ``done(result)``."""
        self.result = None
        self.app.push(view)
        progress = self.progress_to(view)

        def finished(result) -> None:
            self.result = result
            self.app.close_dialog()
            done(result)

        self.start(name, lambda cancel: run(progress, cancel), finished, failed, errors)

    def failed(self, title: str, message: str) -> None:
        """The job could not run: off its progress screen, say why."""
        self.app.pop()
        self.app.dialog(title, message, [("OK", self.app.close_dialog)])

    def confirm_cancel(self) -> None:
        if self.worker is None or not self.worker.is_alive():
            return
        self.app.dialog(self.question, self.explanation,
                        [(self.keep, self.app.close_dialog), ("Stop", self._cancel)])

    def _cancel(self) -> None:
        self.app.close_dialog()
        self.cancel.set()


class JobController:
    """A controller whose long work is its ``job``: the job's thread and its result."""

    job: Job

    @property
    def worker(self) -> threading.Thread | None:
        return self.job.worker

    @property
    def result(self):
        return self.job.result
