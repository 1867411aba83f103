import torch
import torch.nn.functional as F

from visual_lps.nn.mlp import EnsembleMLP


def test_ensemble_equals_members_computed_one_by_one():
    torch.manual_seed(0)
    ensemble = EnsembleMLP(3, 6, (8, 8), 2, layer_norm=True)
    with torch.no_grad():
        for scale, shift in zip(ensemble.norm_scale, ensemble.norm_shift):
            scale.uniform_(0.5, 1.5)
            shift.uniform_(-0.5, 0.5)
    x = torch.randn(5, 6)
    out = ensemble(x)
    assert out.shape == (3, 5, 2)
    for i in range(3):
        h = x
        for layer, scale, shift in zip(ensemble.hidden, ensemble.norm_scale, ensemble.norm_shift):
            h = F.gelu(h @ layer.weight[i] + layer.bias[i])
            h = F.layer_norm(h, h.shape[-1:]) * scale[i] + shift[i]
        expected = h @ ensemble.out.weight[i] + ensemble.out.bias[i]
        assert torch.allclose(out[i], expected, atol=1e-5)


def test_members_start_different():
    ensemble = EnsembleMLP(2, 4, (8,), 1)
    out = ensemble(torch.randn(10, 4))
    assert not torch.allclose(out[0], out[1])
