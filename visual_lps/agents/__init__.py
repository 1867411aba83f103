"""Agents: one module each, holding its config, losses and update. `AGENTS` maps a name to its config class and
agent class (`RegisteredAgent`)."""

from typing import NamedTuple

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig
from visual_lps.agents.base import AgentConfig, ChunkedAgent
from visual_lps.agents.dsrl import DSRLAgent, DSRLConfig
from visual_lps.agents.flow_bc import FlowBCAgent, FlowBCConfig
from visual_lps.agents.latent_steering import LatentSteeringAgent, LatentSteeringConfig
from visual_lps.agents.lps import LPSAgent, LPSConfig
from visual_lps.agents.qc_fql import QCFQLAgent, QCFQLConfig



class RegisteredAgent(NamedTuple):
    """An agent's config class and agent class, as `--agent NAME` selects them."""

    config: type[AgentConfig]
    agent: type[ChunkedAgent]


AGENTS = {
    "lps": RegisteredAgent(LPSConfig, LPSAgent),
    "flow-bc": RegisteredAgent(FlowBCConfig, FlowBCAgent),
    "qc-fql": RegisteredAgent(QCFQLConfig, QCFQLAgent),
    "dsrl": RegisteredAgent(DSRLConfig, DSRLAgent),
}

__all__ = [
    "AGENTS", "ActorCriticAgent", "AgentConfig", "ChunkedAgent", "CriticConfig", "DSRLAgent", "DSRLConfig",
    "FlowBCAgent", "FlowBCConfig", "LPSAgent", "LPSConfig", "LatentSteeringAgent", "LatentSteeringConfig",
    "QCFQLAgent", "QCFQLConfig", "RegisteredAgent",
]
