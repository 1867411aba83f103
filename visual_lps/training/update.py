"""One training update as one function of the batch: forward, gradients, gradient all-reduce across
processes, Adam, the Polyak target update and the running sums of the logged metrics.

Nothing inside it synchronises the host with the device (no `.item()`, no branch on a tensor's value, no
`.cpu()`); every random number it uses arrives in the batch (`batch["random"]`, drawn by the sampler on the
device). So the whole update compiles as ONE graph (`torch.compile(fullgraph=True)`) and, on CUDA, replays
as a CUDA graph (`mode="reduce-overhead"`): a state update is a few hundred small kernels whose launches,
not their arithmetic, cost the time. Eager runs the same code, for debugging.

The optimiser is a `torch.optim.Adam` used as the holder of Adam's state (so checkpoints keep its format);
the update itself is written here with foreach operations, because `Optimizer.step` breaks graphs on
purpose. Processes average their gradients with one all-reduce of one flat tensor; the agent is not wrapped
in DDP (whose reducer hooks cannot be traced into the graph), and every process applies the same update to
the same weights, which the trainer verifies at every checkpoint.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
import torch.distributed as dist
from torch import nn

from visual_lps.agents.base import Batch
from visual_lps.distributed import process_count
from visual_lps.nn.compile_options import CompiledOrEager, compile_graph


class UpdateStep:
    """Applies one update per call and accumulates the agent's metrics (plus `train/grad_norm`) on the device.

    `metrics()` syncs once: it returns the means since its last call (averaged over processes) and raises
    FloatingPointError naming each value that was NaN or inf and the first step it was.
    """

    def __init__(
        self,
        agent: nn.Module,
        optimizer: torch.optim.Adam,
        *,
        compile: bool = False,
        backend: str | Callable = "inductor",
        cuda_graphs: bool | None = None,
        mixed_precision: str | None = None,
        first_step: int = 0,
    ):
        if mixed_precision not in (None, "no", "bf16"):
            raise ValueError(f"mixed precision {mixed_precision!r} is not supported: use 'bf16' or 'no' (fp16 "
                             f"needs loss scaling, which bf16 does not)")
        if len(optimizer.param_groups) != 1:
            raise ValueError(f"the update steps one parameter group with one lr and betas; the optimizer has "
                             f"{len(optimizer.param_groups)} groups: put every parameter in one")
        self.agent = agent
        self.optimizer = optimizer
        self.params = list(optimizer.param_groups[0]["params"])
        self.device = self.params[0].device
        self.autocast = mixed_precision == "bf16"
        self.world = process_count()
        self.step_count = torch.full((), first_step, dtype=torch.long, device=self.device)
        self.names: list[str] | None = None  # the metrics, known after the first (eager) update
        self.sums: torch.Tensor | None = None
        self.first_bad: torch.Tensor | None = None
        self.calls = 0
        # Adam's state, gathered once (hence: build the UpdateStep after loading a checkpoint, which replaces it).
        self.adam_state = self._adam_state()
        for tensors in self.adam_state:
            for tensor in tensors:
                # Updated in place by the graph: a CUDA graph must use them where they are, not copy them.
                torch._dynamo.mark_static_address(tensor)
        self.compiled = compile
        self.cuda_graphs = False
        if compile:
            # The first call runs eagerly (it sizes the metric sums); later calls run the compiled graph.
            self.cuda_graphs = self.device.type == "cuda" if cuda_graphs is None else cuda_graphs
            self.cuda_graphs = self.cuda_graphs and backend == "inductor"
            compiled = compile_graph(self._step, device=self.device, backend=backend, cuda_graphs=self.cuda_graphs)
            self._step_fn = CompiledOrEager(compiled, self._step, "the update")
        else:
            self._step_fn = self._step

    def describe(self) -> str:
        """How the update runs, for the start of a training log."""
        if self.compiled:
            parts = ["compiled as one graph" + (", replayed as CUDA graphs" if self.cuda_graphs else "")]
            if self._step_fn.failed:
                parts = [f"eager (compiling failed: {self._step_fn.failed})"]
        else:
            parts = ["eager (uncompiled)"]
        if self.autocast:
            parts.append("bf16 autocast")
        if self.world > 1:
            parts.append(f"gradients averaged over {self.world} processes in the update")
        return ", ".join(parts)

    def _adam_state(self) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """(first moments, second moments, step counts), created as torch.optim.Adam would on its first step."""
        moments, squares, steps = [], [], []
        for p in self.params:
            state = self.optimizer.state[p]
            if not state:
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            moments.append(state["exp_avg"])
            squares.append(state["exp_avg_sq"])
            steps.append(state["step"])
        return moments, squares, steps

    def __call__(self, batch: Batch) -> None:
        moments, squares, steps = self.adam_state
        if self.sums is None:
            metrics = self._update(batch, moments, squares, steps)
            self.names = list(metrics)
            self.sums = torch.zeros(len(self.names), device=self.device)
            self.first_bad = torch.full((len(self.names),), -1, dtype=torch.long, device=self.device)
            for tensor in (self.step_count, self.sums, self.first_bad):
                torch._dynamo.mark_static_address(tensor)  # mutated in place by the graph, kept across calls
            self._accumulate(metrics)
        else:
            # Gradients by torch.autograd.grad inside the graph: dynamo traces autograd only when asked.
            with torch._dynamo.config.patch(trace_autograd_ops=True):
                self._step_fn(batch, moments, squares, steps)
        self.calls += 1

    def _step(self, batch: Batch, moments, squares, steps) -> None:
        """What the compiled graph holds: one update and the metric sums."""
        self._accumulate(self._update(batch, moments, squares, steps))

    def _update(self, batch: Batch, moments, squares, steps) -> dict[str, torch.Tensor]:
        """Forward, gradients (averaged over processes), Adam and the target update; returns the metrics."""
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()
        with autocast:
            loss, metrics = self.agent(batch)
        grads = list(torch.autograd.grad(loss, self.params))
        if self.world > 1:
            flat = torch.cat([g.reshape(-1) for g in grads])
            dist.all_reduce(flat)
            grads = list(torch.split(flat.div_(self.world), [p.numel() for p in self.params]))
            grads = [g.view_as(p) for g, p in zip(grads, self.params)]
        metrics = {k: v.detach() for k, v in metrics.items()}
        metrics["train/grad_norm"] = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        with torch.no_grad():
            self._adam(grads, moments, squares, steps)
            self.agent.update_targets()
        return metrics

    @torch.no_grad()
    def _accumulate(self, metrics: dict[str, torch.Tensor]) -> None:
        self.step_count.add_(1)
        values = torch.stack([metrics[name].float() for name in self.names])
        self.sums.add_(values)
        newly_bad = ~torch.isfinite(values) & (self.first_bad < 0)
        self.first_bad.copy_(torch.where(newly_bad, self.step_count, self.first_bad))

    def _adam(self, grads, moments, squares, steps) -> None:
        """torch.optim.Adam's update (no weight decay, no amsgrad) on every parameter at once (one group, checked
        when built), with the step counts kept on the device so that nothing reads back to the host."""
        group = self.optimizer.param_groups[0]
        lr, (beta1, beta2), eps = group["lr"], group["betas"], group["eps"]
        torch._foreach_add_(steps, 1.0)
        torch._foreach_lerp_(moments, grads, 1 - beta1)
        torch._foreach_mul_(squares, beta2)
        torch._foreach_addcmul_(squares, grads, grads, 1 - beta2)
        step = steps[0]
        step_size = lr / (1 - torch.pow(beta1, step))
        bias_root = torch.sqrt(1 - torch.pow(beta2, step))
        denominators = torch._foreach_div(torch._foreach_sqrt(squares), bias_root)
        torch._foreach_add_(denominators, eps)
        updates = torch._foreach_div(moments, denominators)
        torch._foreach_mul_(updates, step_size)
        torch._foreach_sub_(self.params, updates)

    def metrics(self) -> dict[str, float]:
        """Means since the last call over all processes (one sync); FloatingPointError on NaN or inf."""
        if self.sums is None:
            return {}
        self.check_finite()
        means = self.sums / max(self.calls, 1)
        if self.world > 1:
            dist.all_reduce(means)
            means /= self.world
        self.sums.zero_()
        self.calls = 0
        return dict(zip(self.names, means.tolist()))

    def check_finite(self) -> None:
        """Raise FloatingPointError naming every value that went NaN or inf and the first step it did (on any
        process: collective), without resetting the sums."""
        if self.first_bad is None:
            return
        bad = self.first_bad.clone()
        if self.world > 1:
            dist.all_reduce(bad, op=dist.ReduceOp.MAX)
        found = sorted((step, name) for name, step in zip(self.names, bad.tolist()) if step >= 0)
        if found:
            raise FloatingPointError("non-finite " + ", ".join(f"{name} at step {step}" for step, name in found))
