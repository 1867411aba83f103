"""Whether this process is one of several (`torch.distributed` initialised, as under `accelerate launch`), and
its place among them; a single process is rank 0 of 1."""

from __future__ import annotations

import torch.distributed as dist


def is_distributed() -> bool:
    """True when a process group is initialised (it may hold a single process)."""
    return dist.is_available() and dist.is_initialized()


def process_count() -> int:
    return dist.get_world_size() if is_distributed() else 1


def process_rank() -> int:
    return dist.get_rank() if is_distributed() else 0
