import torch
import torch.nn.functional as F

from visual_lps.augmentations import RandomShift


def ramp_images(batch: int = 8, channels: int = 3, size: int = 16) -> torch.Tensor:
    """Every pixel distinct, so a shift can be recovered exactly."""
    return torch.arange(batch * channels * size * size, dtype=torch.float32).view(batch, channels, size, size)


def test_identity_at_probability_zero_and_in_eval_mode():
    images = ramp_images()
    assert RandomShift(pad=3, prob=0.0)(images)[0] is images
    shift = RandomShift(pad=3, prob=1.0).eval()
    assert shift(images)[0] is images


def test_shifts_at_probability_one_by_at_most_pad_with_replicated_border():
    torch.manual_seed(0)
    images = ramp_images()
    (shifted,) = RandomShift(pad=3, prob=1.0)(images)
    assert shifted.shape == images.shape
    padded = F.pad(images, (3, 3, 3, 3), mode="replicate")
    moved = 0
    for i in range(len(images)):
        matches = [(dy, dx) for dy in range(7) for dx in range(7)
                   if torch.equal(padded[i, :, dy:dy + 16, dx:dx + 16], shifted[i])]
        assert len(matches) == 1, "each output is the padded image cropped at one offset"
        moved += matches[0] != (3, 3)
    assert moved > 0


def test_observation_and_next_observation_share_the_shift():
    torch.manual_seed(1)
    images = ramp_images()
    obs, next_obs = RandomShift(pad=3, prob=1.0)(images, images.clone())
    assert torch.equal(obs, next_obs)
    assert not torch.equal(obs, images)
