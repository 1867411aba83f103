"""The one place that says how visual-lps calls `torch.compile` (the update and `act` share it), and what happens
when compiling fails: the run goes on eagerly."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from visual_lps.distributed import process_rank


INDUCTOR_CACHE = Path.home() / ".cache" / "visual-lps" / "torchinductor"
"""inductor's on-disk cache (compiled kernels and graphs) unless TORCHINDUCTOR_CACHE_DIR says otherwise: kept
across reboots (torch's default lies in /tmp), so a second run of the same update compiles in seconds"""


def use_persistent_cache() -> None:
    """Point inductor's on-disk cache at `INDUCTOR_CACHE`, where the user has not chosen a folder."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(INDUCTOR_CACHE)


def compile_graph(fn: Callable, *, device: torch.device, backend: str | Callable = "inductor",
                  cuda_graphs: bool = False, skip_module_guards: bool = False) -> Callable:
    """`torch.compile(fn, fullgraph=True)` with inductor's options spelled out (torch refuses `mode` beside
    `options`, so CUDA graphs are asked for as `triton.cudagraphs`, which is what mode="reduce-overhead" sets)."""
    if backend != "inductor":
        return torch.compile(fn, fullgraph=True, backend=backend)
    use_persistent_cache()
    options: dict[str, Any] = {"triton.cudagraphs": cuda_graphs}
    if device.type == "cuda":
        # Inductor's loop reordering after fusion fails an assertion on the update's graph on CUDA (torch 2.11,
        # `reorder_loops_by_dep_pair`: "assert isinstance(snode, SchedulerNode)"); fusion itself is unaffected.
        options["loop_ordering_after_fusion"] = False
    if skip_module_guards:
        # No Python check of every parameter on each call: weights change in place, modules never swap.
        options["guard_filter_fn"] = torch.compiler.skip_guard_on_inbuilt_nn_modules_unsafe
    return torch.compile(fn, fullgraph=True, backend=backend, options=options)


def _say_on_main_process(message: str) -> None:
    """One line on the main process only (every process compiles, and fails, alike)."""
    if process_rank() == 0:
        tqdm.write(message, file=sys.stderr)


def one_line_reason(error: BaseException) -> str:
    """The error and its root cause, one line (torch wraps a compiler's own error, whose text says why)."""
    root = error
    while (inner := getattr(root, "inner_exception", None) or root.__cause__) is not None:
        root = inner
    first_line = (str(root).strip().splitlines() or [""])[0][:200]
    outer = f"{type(error).__name__}: " if root is not error else ""
    return f"{outer}{type(root).__name__}: {first_line}"


class CompiledOrEager:
    """Calls a compiled function, falling back to its eager twin for good if compiling it fails.

    Compiling (tracing, inductor, and on CUDA the graph capture of the first calls) can fail on a machine, driver
    or torch version we never met; that must not end a user's first run. A failure in the first `attempts` calls
    (inductor compiles at the first, CUDA graphs are captured at the second or third) is said in one line naming
    `--no-compile`, and that call and every later one run eagerly. Compilation fails before the graph runs, so
    the eager retry applies the call once. The first call that compiles says how long it took."""

    def __init__(self, compiled: Callable, eager: Callable, what: str, *, attempts: int = 3,
                 say: Callable[[str], None] = _say_on_main_process):
        self.compiled, self.eager, self.what, self.attempts, self.say = compiled, eager, what, attempts, say
        self.failed: str | None = None
        """why compiling failed (one line), or None while the compiled function runs"""
        self.calls = 0

    def __call__(self, *args: Any) -> Any:
        if self.failed is not None or self.calls >= self.attempts:
            return (self.eager if self.failed is not None else self.compiled)(*args)
        self.calls += 1
        start = time.perf_counter()
        try:
            result = self.compiled(*args)
        except Exception as e:  # noqa: BLE001 - any failure of the compiler or the capture, by design
            self.failed = one_line_reason(e)
            self.say(f"warning: compiling {self.what} failed ({self.failed}); it runs eagerly instead "
                     f"(slower; --no-compile skips the attempt)")
            return self.eager(*args)
        if self.calls == 1:
            self.say(f"{self.what} compiled in {time.perf_counter() - start:.1f} s")
        return result
