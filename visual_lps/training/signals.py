"""What stops a training run safely: termination signals (non-finite values are watched by
`visual_lps.training.update.UpdateStep`, inside the update).

A signal only sets a flag (`visual_lps.stop_signals`), and processes agree on it every few steps through the
host, never waiting on the device.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from visual_lps.distributed import is_distributed, process_count
from visual_lps.stop_signals import StopSignalFlag


class StopRequest:
    """SIGTERM or SIGINT asks the run to checkpoint and exit; a second one stops it at once."""

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self._flag = StopSignalFlag(second_acts_as_before=True).install()
        # Processes agree through a CPU (gloo) group: the flag never waits for the device's queue of work.
        self._group = dist.new_group(backend="gloo") if is_distributed() and process_count() > 1 else None

    @property
    def signal_name(self) -> str | None:
        """The signal this process received ('SIGTERM'), or None."""
        return self._flag.name

    def restore(self) -> None:
        self._flag.restore()

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
