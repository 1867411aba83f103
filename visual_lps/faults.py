"""What stops a training run safely: termination signals and non-finite values.

Both are watched without a host-device sync on most steps, so they cost nothing measurable: a signal only
sets a flag (processes agree on it every few steps), and each loss and the gradient norm fold into a device
tensor of first-bad steps that is read where the trainer syncs anyway (logging, checkpoints).
"""

from __future__ import annotations

import signal
from collections.abc import Mapping

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequest:
    """SIGTERM or SIGINT asks the run to checkpoint and exit; a second one stops it at once."""

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self.signal_name: str | None = None
        self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}

    def _handle(self, signum: int, frame) -> None:
        self.signal_name = signal.Signals(signum).name
        for sig, handler in self._previous.items():  # a second signal acts as it would have without us
            signal.signal(sig, handler)

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def should_stop(self, step: int, device: torch.device) -> bool:
        """True when any process got a signal. Processes compare every `check_every` steps (one all-reduce
        of a single number), so all of them stop after the same step."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return self.signal_name is not None
        if step % self.check_every:
            return False
        flag = torch.tensor([float(self.signal_name is not None)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return bool(flag.item())


class NonFiniteWatch:
    """Remembers, per watched value, the first step at which it was NaN or inf."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.first_bad: torch.Tensor | None = None

    def update(self, values: Mapping[str, torch.Tensor], step: int) -> None:
        finite = torch.stack([torch.isfinite(v).all() for v in values.values()])
        if self.first_bad is None:
            self.names = list(values)
            self.first_bad = torch.full_like(finite, -1, dtype=torch.long)
        newly_bad = ~finite & (self.first_bad < 0)
        self.first_bad = torch.where(newly_bad, step, self.first_bad)

    def check(self) -> None:
        """Raise FloatingPointError naming every non-finite value and the step it went bad. Syncs; with
        several processes it is collective, so that all of them stop together."""
        if self.first_bad is None:
            return
        first_bad = self.first_bad.tolist()
        bad = [(step, name) for name, step in zip(self.names, first_bad) if step >= 0]
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([float(bool(bad))], device=self.first_bad.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            if flag.item() and not bad:
                raise FloatingPointError("non-finite values on another process")
        if bad:
            described = ", ".join(f"{name} at step {step}" for step, name in sorted(bad))
            raise FloatingPointError(f"non-finite {described}")
