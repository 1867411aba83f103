"""Agents: one module each, holding its config, losses and update. `AGENTS` maps a name to (config, class)."""

from visual_lps.agents.base import ChunkedActorCritic
from visual_lps.agents.lps import LPSAgent, LPSConfig

AGENTS = {"lps": (LPSConfig, LPSAgent)}

__all__ = ["AGENTS", "ChunkedActorCritic", "LPSAgent", "LPSConfig"]
