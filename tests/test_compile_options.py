"""How torch.compile is called: CUDA graphs asked for through options (torch refuses `mode` beside `options`),
and the inductor workaround that the update's graph needs on CUDA."""

import torch

from visual_lps import compile_options
from visual_lps.compile_options import compile_graph


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
