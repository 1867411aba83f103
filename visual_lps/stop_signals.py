"""SIGTERM and SIGINT as a flag that long-running code checks where stopping is safe (between steps, episodes,
runs), instead of an exception raised wherever the signal lands: one raised inside a finaliser or a weakref
callback is printed and swallowed there, and the work went on."""

from __future__ import annotations

import signal
from collections.abc import Callable

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignalFlag:
    """While installed (a context manager, or `install`/`restore`), a stop signal sets `signum` (the first one
    received) and calls `on_signal` with each. With `second_acts_as_before`, the first signal puts the previous
    handlers back, so that a second one stops the process as it would have without the flag."""

    def __init__(self, on_signal: Callable[[int], None] | None = None, *, second_acts_as_before: bool = False):
        self.signum: int | None = None
        self.on_signal = on_signal
        self.second_acts_as_before = second_acts_as_before
        self._previous: dict[int, object] = {}

    @property
    def name(self) -> str | None:
        """The received signal's name ('SIGTERM'), or None."""
        return None if self.signum is None else signal.Signals(self.signum).name

    def install(self) -> StopSignalFlag:
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def restore(self) -> None:
        """Put back the handlers that were there before `install`."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
        if self.second_acts_as_before:
            self.restore()
        if self.on_signal is not None:
            self.on_signal(signum)

    def __enter__(self) -> StopSignalFlag:
        return self.install()

    def __exit__(self, *exc) -> None:
        self.restore()
