"""What stops a training run safely: termination signals (non-finite values are watched by
`visual_lps.training.update.UpdateStep`, inside the update).

A signal only sets a flag, and processes agree on it every few steps through the host, never waiting on the
device.
"""

from __future__ import annotations

import signal

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """SIGTERM or SIGINT asks the run to checkpoint and exit; a second one stops it at once."""

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self.signal_name: str | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        # Processes agree through a CPU (gloo) group: the flag never waits for the device's queue of work.
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
        self._group = dist.new_group(backend="gloo") if distributed else None

    def _handle(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig, handler in self._previous.items():  # a second signal acts as it would have without us
            signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def should_stop(self, step: int) -> bool:
        """True when any process got a signal. Processes compare every `check_every` steps (one all-reduce
        of a single number on the host), so all of them stop after the same step."""
        if self._group is None:
            return self.signal_name is not None
        if step % self.check_every:
            return False
        flag = torch.tensor([float(self.signal_name is not None)])
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group)
        return bool(flag.item())
