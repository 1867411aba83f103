"""The state encoders of one agent, by role, with the image augmentation in front of them.

Each network of an agent that reads the state has a *role* ('critic', 'prior', 'actor', ...). By default one
shared encoder serves every role, a deliberate departure from FQL and the LPS reference: images are encoded
once per step instead of once per network. Only the losses of the roles in `trained_by` update it; the other
roles read its features detached. With `shared=False` every role gets its own encoder, trained by its own
loss (the reference's layout, kept for comparison).

Features of s_{t+h} feed only targets, so they are computed without gradient: for the policy roles by the
online encoder(s), and for the 'target' role (the TD target's critic input) by the shared encoder, or, with
per-role encoders, by a Polyak copy of the critic's.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from visual_lps.nn.augmentations import RandomShift
from visual_lps.nn.encoders import build_encoder
from visual_lps.observations import ObsSpec

Features = dict[str, torch.Tensor]
"""State features per role (and 'target' for the TD target's view of s_{t+h})."""


class EncoderSet(nn.Module):
    def __init__(
        self,
        name: str,
        obs_spec: ObsSpec,
        weights: str,
        roles: tuple[str, ...],
        *,
        shared: bool,
        trained_by: tuple[str, ...],
        target_role: str | None,
        augment_prob: float,
        augment_pad: int,
    ):
        """`roles`: the networks that read features; `trained_by`: the roles whose losses update a shared
        encoder; `target_role`: the role whose encoder a per-role target copy follows (None: no target view)."""
        super().__init__()
        self.roles, self.shared, self.trained_by, self.target_role = roles, shared, trained_by, target_role
        if shared:
            self.encoder = build_encoder(name, obs_spec, weights)
        else:
            self.by_role = nn.ModuleDict({role: build_encoder(name, obs_spec, weights) for role in roles})
            if target_role is not None:
                self.target = copy.deepcopy(self.by_role[target_role]).requires_grad_(False)
        self.augment = RandomShift(augment_pad, augment_prob) if self.first_encoder.is_image and augment_prob > 0 else None
        self.feature_dim: int = self.first_encoder.feature_dim

    @property
    def first_encoder(self) -> nn.Module:
        """The shared encoder, or the first role's: its `preprocess`, `image_keys`, `is_image` and `feature_dim`
        describe every encoder of the set (all are built alike)."""
        return self.encoder if self.shared else self.by_role[self.roles[0]]

    def all_encoders(self) -> list[nn.Module]:
        """Every encoder module, target copy included."""
        if self.shared:
            return [self.encoder]
        return [*self.by_role.values(), *([self.target] if self.target_role is not None else [])]

    def set_state_statistics(self, mean: dict, std: dict) -> None:
        """Standardise proprioception (per key) in every encoder that reads named observations."""
        for encoder in self.all_encoders():
            encoder.set_state_statistics(mean, std)

    def _encode(self, inputs, roles: tuple[str, ...]) -> Features:
        if self.shared:
            return dict.fromkeys(roles, self.encoder(inputs))
        return {role: self.by_role[role](inputs) for role in roles}

    def forward(self, observations) -> Features:
        """Features per role of stored observations (no augmentation, no target view)."""
        return self._encode(self.first_encoder.preprocess(observations), self.roles)

    def draw_random_inputs(self, batch_size: int, device: torch.device,
                           generator: torch.Generator | None = None) -> dict[str, Any]:
        """The random shifts of one transition batch's images (nothing without augmentation)."""
        if self.augment is None:
            return {}
        return {"shifts": self.augment.draw_transition(batch_size, self.first_encoder.image_keys, device, generator)}

    def transition(self, batch: dict[str, Any], next_roles: tuple[str, ...]) -> tuple[Features, Features]:
        """Features per role of s_t (with gradient where that role's loss trains the encoder) and, without
        gradient, of s_{t+h} for `next_roles` (which may include 'target'). Both views share one random shift
        per transition, so the TD target looks through the same window as the Q-value it trains."""
        obs = self.first_encoder.preprocess(batch["observations"])
        next_obs = self.first_encoder.preprocess(batch["next_observations"]) if next_roles else None
        if self.augment is not None:
            shifts, keys = batch["random"]["shifts"], self.first_encoder.image_keys
            if next_obs is None:
                obs = self.augment.observation(shifts, obs, keys)
            else:
                obs, next_obs = self.augment.transition(shifts, obs, next_obs, keys)
        features = self._encode(obs, self.roles)
        if self.shared:
            features = {role: f if role in self.trained_by else f.detach() for role, f in features.items()}
        if not next_roles:
            return features, {}
        with torch.no_grad():
            if self.shared:
                return features, dict.fromkeys(next_roles, self.encoder(next_obs))
            online = tuple(role for role in next_roles if role != "target")
            next_features = self._encode(next_obs, online)
            if "target" in next_roles:
                next_features["target"] = self.target(next_obs)
            return features, next_features

    def target_pairs(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(target parameters, the online parameters they follow) for the Polyak update; none when shared."""
        if self.shared or self.target_role is None:
            return [], []
        return list(self.target.parameters()), list(self.by_role[self.target_role].parameters())

