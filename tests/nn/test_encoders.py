import pytest
import torch

from visual_lps.nn.encoders import build_encoder, images_to_float


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


def test_each_camera_gets_its_own_encoder_and_proprioception_is_concatenated():
    spec = {"wrist_image": (3, 32, 32, 3), "front_image": (3, 48, 64, 3), "joint_pos": (3, 7), "gripper": (3, 1)}
    encoder = build_encoder("impala_small", spec)
    assert encoder.is_image and encoder.image_keys == ("wrist_image", "front_image")
    assert encoder.feature_dim == 512 + 512 + 24
    obs = {"wrist_image": frames(2, 3, 32, 32, 3), "front_image": frames(2, 3, 48, 64, 3),
           "joint_pos": torch.randn(2, 3, 7), "gripper": torch.rand(2, 3, 1)}
    inputs = encoder.preprocess(obs)
    assert inputs["front_image"].shape == (2, 9, 48, 64) and inputs["joint_pos"].shape == (2, 21)
    features = encoder(inputs)
    assert features.shape == (2, encoder.feature_dim)
    assert torch.equal(features[:, -24:], torch.cat([inputs["joint_pos"], inputs["gripper"]], dim=1))
    with pytest.raises(KeyError, match="gripper"):
        encoder.preprocess({k: v for k, v in obs.items() if k != "gripper"})


def test_state_only_dicts_and_flat_encoder_on_cameras():
    encoder = build_encoder("flat", {"joint_pos": (7,), "object": (3,)})
    assert not encoder.is_image and encoder.feature_dim == 10
    with pytest.raises(ValueError, match="cannot read camera keys"):
        build_encoder("flat", {"front_image": (64, 64, 3)})


@pytest.mark.parametrize("suffix", ["pth", "safetensors"])
def test_timm_encoder_loads_local_weights_only(tmp_path, suffix):
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("resnet18", num_classes=0)
    path = tmp_path / f"resnet18.{suffix}"
    save_file(source.state_dict(), str(path)) if suffix == "safetensors" else torch.save(source.state_dict(), path)
    encoder = build_encoder("timm:resnet18", (64, 64, 3), weights=str(path))
    for name, value in source.state_dict().items():
        assert torch.equal(encoder.backbone.state_dict()[name], value), name
    assert torch.allclose(encoder.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))  # ImageNet statistics
    stacked = build_encoder("timm:resnet18", (3, 64, 64, 3), weights=str(path))  # first conv adapted to 9 channels
    assert stacked.backbone.conv1.weight.shape[1] == 9
    assert torch.equal(stacked.backbone.layer4[0].conv1.weight, source.layer4[0].conv1.weight)


def test_missing_or_misplaced_weights_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="encoder_weights .*nope.pth"):
        build_encoder("timm:resnet18", (64, 64, 3), weights=str(tmp_path / "nope.pth"))
    with pytest.raises(ValueError, match="for timm encoders"):
        build_encoder("impala", (64, 64, 3), weights=str(tmp_path / "nope.pth"))
    import timm

    torch.save(timm.create_model("resnet18", num_classes=0).state_dict(), tmp_path / "resnet18.pth")
    with pytest.raises(ValueError, match="do not fit timm:resnet34: missing .*layer1.2"):
        build_encoder("timm:resnet34", (64, 64, 3), weights=str(tmp_path / "resnet18.pth"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="junk.pth: cannot read weights"):
        build_encoder("timm:resnet18", (64, 64, 3), weights=str(tmp_path / "junk.pth"))


def test_proprioception_is_standardised_with_the_dataset_statistics():
    encoder = build_encoder("impala_small", {"front_image": (2, 16, 16, 3), "joints": (2, 3), "gripper": (2, 1)})
    encoder.set_state_statistics({"joints": torch.tensor([1.0, 2.0, 3.0]), "gripper": torch.tensor([0.5])},
                                 {"joints": torch.tensor([2.0, 2.0, 4.0]), "gripper": torch.tensor([0.25])})
    joints = torch.tensor([[[3.0, 2.0, 7.0], [1.0, 4.0, 3.0]]])  # two stacked frames
    inputs = encoder.preprocess({"front_image": frames(1, 2, 16, 16, 3), "joints": joints,
                                 "gripper": torch.tensor([[[1.0], [0.0]]])})
    assert inputs["joints"].tolist() == [[1.0, 0.0, 1.0, 0.0, 1.0, 0.0]]
    assert inputs["gripper"].tolist() == [[2.0, -2.0]]
    assert {"state_mean", "state_std"} <= set(encoder.state_dict())
