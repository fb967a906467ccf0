"""A stop asked for by a signal, safe to set from a signal handler.

Python runs a signal handler in the main thread between two bytecodes, wherever that
thread is. A handler that takes a lock can therefore land while the main thread holds
that very lock: `threading.Event.set()` from a handler deadlocks when the signal arrives
inside the Event's own `wait()` or `set()` (a non-reentrant lock), and a child gets one
SIGTERM per exiting thread of its parent through PR_SET_PDEATHSIG, so a second signal
inside the first handler is not rare. `StopSignal.handle` takes no lock: it records the
signal and writes one byte to a non-blocking pipe that `wait()` selects on.
"""

from __future__ import annotations

import os
import select
import signal


class StopSignal:
    def __init__(self) -> None:
        self._r, self._w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.signals: list[int] = []  # list.append takes no lock the handler could meet

    def install(self, *signums: int) -> StopSignal:
        for signum in signums:
            signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, _frame: object = None) -> None:
        self.signals.append(signum)
        try:
            os.write(self._w, b"x")
        except BlockingIOError:
            pass  # the pipe is full: a byte is already waiting for wait()

    def is_set(self) -> bool:
        return bool(self.signals)

    def wait(self, timeout: float | None = None) -> bool:
        """True once a signal asked to stop; False if `timeout` seconds passed first."""
        if not self.signals:
            select.select([self._r], [], [], timeout)
        return bool(self.signals)

    @property
    def name(self) -> str:
        """The first signal's name, for the log."""
        return signal.Signals(self.signals[0]).name if self.signals else ""
