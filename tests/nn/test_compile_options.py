"""How torch.compile is called: CUDA graphs asked for through options (torch refuses `mode` beside `options`),
and the inductor workaround that the update's graph needs on CUDA."""

import pytest
import torch

from visual_lps.nn import compile_options
from visual_lps.nn.compile_options import CompiledOrEager, compile_graph


def test_cuda_graphs_and_module_guards_are_options_never_a_mode(monkeypatch):
    calls = []
    monkeypatch.setattr(compile_options.torch, "compile", lambda fn, **kwargs: calls.append(kwargs) or fn)
    compile_graph(abs, device=torch.device("cuda"), cuda_graphs=True, skip_module_guards=True)
    (kwargs,) = calls
    assert "mode" not in kwargs and kwargs["fullgraph"] is True
    assert kwargs["options"]["triton.cudagraphs"] is True
    assert kwargs["options"]["loop_ordering_after_fusion"] is False  # fails an assertion on CUDA (torch 2.11)
    assert kwargs["options"]["guard_filter_fn"] is torch.compiler.skip_guard_on_inbuilt_nn_modules_unsafe
    compile_graph(abs, device=torch.device("cpu"), backend="eager")
    assert calls[1] == {"fullgraph": True, "backend": "eager"}


def test_cuda_graph_options_compile_and_run_with_inductor():
    """The combination that train.py asks for on a GPU (graphs + guard filter) is accepted by torch.compile."""
    torch._dynamo.reset()
    compiled = compile_graph(lambda x: torch.tanh(x) * 2, device=torch.device("cpu"), cuda_graphs=True,
                             skip_module_guards=True)
    x = torch.randn(4)
    assert torch.allclose(compiled(x), torch.tanh(x) * 2)


def test_a_failure_while_capturing_falls_back_but_a_later_one_is_not_hidden():
    """CUDA graphs are captured at the second or third call: a failure there still falls back; after the first
    `attempts` calls an error is the run's own and propagates."""
    said, calls = [], []

    def compiled(x):
        calls.append(x)
        if len(calls) in (2, 5):
            raise RuntimeError("capture failed")
        return x + 1

    fn = CompiledOrEager(compiled, lambda x: x + 1, "the thing", attempts=3, say=said.append)
    assert [fn(i) for i in range(4)] == [1, 2, 3, 4]
    assert said[0] == "the thing compiled in 0.0 s" and "compiling the thing failed (RuntimeError: capture failed)" \
        in said[1] and fn.failed and len(calls) == 2  # eager from the failure on
    late = CompiledOrEager(compiled, lambda x: x + 1, "the thing", attempts=1, say=said.append)
    calls.clear()
    late(0)
    calls.extend([0, 0, 0])
    with pytest.raises(RuntimeError, match="capture failed"):
        late(0)
