"""The one place that says how visual-lps calls `torch.compile` (the update and `act` share it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch


def compile_graph(fn: Callable, *, device: torch.device, backend: str | Callable = "inductor",
                  cuda_graphs: bool = False, skip_module_guards: bool = False) -> Callable:
    """`torch.compile(fn, fullgraph=True)` with inductor's options spelled out (torch refuses `mode` beside
    `options`, so CUDA graphs are asked for as `triton.cudagraphs`, which is what mode="reduce-overhead" sets)."""
    if backend != "inductor":
        return torch.compile(fn, fullgraph=True, backend=backend)
    options: dict[str, Any] = {"triton.cudagraphs": cuda_graphs}
    if device.type == "cuda":
        # Inductor's loop reordering after fusion fails an assertion on the update's graph on CUDA (torch 2.11,
        # `reorder_loops_by_dep_pair`: "assert isinstance(snode, SchedulerNode)"); fusion itself is unaffected.
        options["loop_ordering_after_fusion"] = False
    if skip_module_guards:
        # No Python check of every parameter on each call: weights change in place, modules never swap.
        options["guard_filter_fn"] = torch.compiler.skip_guard_on_inbuilt_nn_modules_unsafe
    return torch.compile(fn, fullgraph=True, backend=backend, options=options)
