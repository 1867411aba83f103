"""The visual path learns: LPS trained from pixels alone (impala_small through the shared encoder, random
shifts on) picks, in each of two scenes, the mode that pays there. The scene is drawn into a small image in
microseconds: a bright square on the left or on the right of a noisy background. Which mode pays depends on
the scene, so the choice must come from the image."""

import numpy as np
import torch

from tests.agents.toy import GOOD, MODES, SPREAD, nearest_mode
from visual_lps.agents.lps import LPSAgent, LPSConfig
from visual_lps.data.chunks import ChunkSampler, DataNeeds, OfflineData

SIZE = 12


def scene_image(scene: int, rng: np.random.Generator) -> np.ndarray:
    image = rng.integers(0, 40, (SIZE, SIZE, 3), dtype=np.uint8)
    left = 1 if scene == 0 else SIZE - 5
    image[4:8, left:left + 4] = 255
    return image


def pixel_bandit(episodes: int = 800, seed: int = 0) -> OfflineData:
    """One-step episodes; in scene s the logged actions come from both modes and mode (GOOD + s) % 2 pays."""
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 2, episodes)
    mode = rng.integers(0, 2, episodes)
    first = MODES[mode] + rng.normal(0, SPREAD, (episodes, 2))
    actions = np.stack([first, np.zeros((episodes, 2))], axis=1).reshape(-1, 2).astype(np.float32)
    pays = mode == (GOOD + scene) % 2
    rewards = np.stack([pays, np.zeros(episodes)], axis=1).reshape(-1).astype(np.float32)
    images = np.stack([scene_image(s, rng) for s in np.repeat(scene, 2)])
    return OfflineData(observations=images, actions=actions, rewards=rewards,
                       masks=np.zeros(2 * episodes, np.float32), episode_ends=np.tile([False, True], episodes))


def test_lps_learns_from_pixels_which_mode_pays_in_each_scene(one_thread):
    data = pixel_bandit(seed=0)
    torch.manual_seed(0)
    config = LPSConfig(encoder="impala_small", augment_prob=0.5, augment_pad=1, horizon=1,
                       prior_hidden_dims=(64, 64), critic_hidden_dims=(64, 64), actor_hidden_dims=(32,))
    agent = LPSAgent(config, obs_spec=(SIZE, SIZE, 3), action_dim=2)
    sampler = ChunkSampler(data, DataNeeds(1), device="cpu", seed=0, draw_random=agent.draw_random_inputs)
    optimizer = torch.optim.Adam([p for p in agent.parameters() if p.requires_grad], lr=1e-3)
    for _ in range(STEPS):
        loss, _ = agent(sampler.sample(64))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        agent.update_targets()

    rng = np.random.default_rng(123)  # fresh backgrounds: the policy reads the square, not memorised noise
    for scene in (0, 1):
        images = torch.from_numpy(np.stack([scene_image(scene, rng) for _ in range(8)]))
        actions = agent.act(images).view(-1, 2)
        paying = (GOOD + scene) % 2
        assert (nearest_mode(actions) == paying).all(), f"scene {scene}: chose {actions.tolist()}"
        # Near the paying mode's logged actions, not between the modes (their centres are 1.4 apart).
        gap = torch.cdist(actions, torch.as_tensor(MODES[paying:paying + 1])).max().item()
        assert gap < 0.5, f"scene {scene}: actions {gap:.2f} from the paying mode's centre"


STEPS = 1000
