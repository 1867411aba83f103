import pytest
import torch

from visual_lps.encoders import build_encoder, images_to_float


def frames(*shape: int) -> torch.Tensor:
    return torch.randint(0, 256, shape, dtype=torch.uint8)


@pytest.mark.parametrize("name", ["impala", "impala_small", "timm:resnet18"])
@pytest.mark.parametrize("obs_shape", [(64, 64, 3), (3, 64, 64, 3)], ids=["single", "stack3"])
def test_image_encoders_map_uint8_frames_to_features(name, obs_shape):
    encoder = build_encoder(name, obs_shape)
    features = encoder(encoder.preprocess(frames(2, *obs_shape)))
    assert encoder.is_image and features.shape == (2, encoder.feature_dim)
    assert torch.isfinite(features).all()


def test_impala_feature_size_and_small_variant():
    big, small = build_encoder("impala", (64, 64, 3)), build_encoder("impala_small", (64, 64, 3))
    assert big.feature_dim == small.feature_dim == 512
    assert sum(p.numel() for p in small.parameters()) < sum(p.numel() for p in big.parameters())


def test_images_become_channel_first_floats_on_their_device():
    obs = frames(2, 3, 8, 8, 3)
    images = images_to_float(obs)
    assert images.dtype == torch.float32 and images.shape == (2, 9, 8, 8)
    assert torch.equal(images[1, 3:6].permute(1, 2, 0), obs[1, 1].float() / 255)  # frame 1's colours


def test_flat_encoder_flattens_states():
    encoder = build_encoder("flat", (2, 5))
    assert encoder.feature_dim == 10 and not encoder.is_image
    assert encoder(encoder.preprocess(torch.ones(4, 2, 5))).shape == (4, 10)


def test_bad_encoder_names_and_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="unknown encoder 'vit'"):
        build_encoder("vit", (64, 64, 3))
    with pytest.raises(ValueError, match="needs image observations"):
        build_encoder("impala", (28,))
    with pytest.raises(ValueError, match="timm:no-such-net"):
        build_encoder("timm:no-such-net", (64, 64, 3))
