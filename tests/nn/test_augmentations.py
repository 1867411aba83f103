import torch
import torch.nn.functional as F

from visual_lps.nn.augmentations import WHOLE_IMAGE, RandomShift


def ramp_images(batch: int = 8, channels: int = 3, size: int = 16) -> torch.Tensor:
    """Every pixel distinct, so a shift can be recovered exactly."""
    return torch.arange(batch * channels * size * size, dtype=torch.float32).view(batch, channels, size, size)


def offsets_of(shifted: torch.Tensor, images: torch.Tensor, pad: int = 3) -> list[tuple[int, int]]:
    """For each image, the crop offset (dy, dx) of the replicate-padded original that it equals exactly."""
    size = images.shape[-1]
    padded = F.pad(images, (pad,) * 4, mode="replicate")
    found = []
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                   if torch.equal(padded[i, :, dy:dy + size, dx:dx + size], shifted[i])]
        assert len(matches) == 1, "each output is the padded image cropped at one offset"
        found.append(matches[0])
    return found


def test_shift_is_a_replicate_padded_crop_at_most_pad_pixels_away():
    images = ramp_images()
    augment = RandomShift(pad=3, prob=1.0)
    shifts = augment.draw(len(images), torch.device("cpu"), torch.Generator().manual_seed(0))
    assert shifts.abs().max() <= 3 and torch.equal(shifts, shifts.round())
    (shifted,) = augment(shifts, images)
    offsets = offsets_of(shifted, images)
    # A shift of (x, y) pixels shows the padded image from offset (3 - y, 3 - x).
    assert offsets == [(3 - int(y), 3 - int(x)) for x, y in shifts.tolist()]
    assert any(offset != (3, 3) for offset in offsets)


def test_coin_leaves_the_whole_batch_unshifted_with_probability_one_minus_p():
    augment = RandomShift(pad=3, prob=0.3)
    generator = torch.Generator().manual_seed(0)
    draws = [augment.draw(16, torch.device("cpu"), generator) for _ in range(2000)]
    moved = torch.tensor([bool(d.abs().sum() > 0) for d in draws]).float().mean().item()
    assert abs(moved - 0.3) < 0.04
    assert torch.equal(RandomShift(pad=3, prob=0.0).draw(16, torch.device("cpu")), torch.zeros(16, 2))
    (same,) = augment(torch.zeros(8, 2), ramp_images())
    assert torch.equal(same, ramp_images())


def test_draws_repeat_from_the_same_generator_state():
    augment = RandomShift(pad=3, prob=0.5)
    first = augment.draw_transition(32, ("left_image", "right_image"), torch.device("cpu"),
                                    torch.Generator().manual_seed(7))
    again = augment.draw_transition(32, ("left_image", "right_image"), torch.device("cpu"),
                                    torch.Generator().manual_seed(7))
    assert set(first) == {"left_image", "right_image"}
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert set(augment.draw_transition(4, None, torch.device("cpu"))) == {WHOLE_IMAGE}


def test_observation_and_next_observation_share_the_shift():
    images = ramp_images()
    augment = RandomShift(pad=3, prob=1.0)
    shifts = augment.draw_transition(len(images), None, torch.device("cpu"), torch.Generator().manual_seed(1))
    obs, next_obs = augment.transition(shifts, images, images.clone(), None)
    assert torch.equal(obs, next_obs)
    assert not torch.equal(obs, images)


def test_bad_probability_and_padding_are_refused():
    for kwargs in (dict(pad=3, prob=1.5), dict(pad=3, prob=-0.1), dict(pad=-1, prob=0.5)):
        try:
            RandomShift(**kwargs)
        except ValueError as e:
            assert "augmentation" in str(e)
        else:
            raise AssertionError(f"{kwargs} accepted")
