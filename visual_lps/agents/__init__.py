"""Agents: one module each, holding its config, losses and update. `AGENTS` maps a name to its config class and
agent class (`RegisteredAgent`).

Two bases: `base.ChunkedAgent` (encoder set, data needs, action scaling, `act`) and `actor_critic.ActorCriticAgent`
(adds the critic ensemble, its target and the chunked TD loss). Field groups a config takes as they are:
`meanflow_bc.MeanFlowFields` (the one-step MeanFlow prior) and `flow_bc.FlowFields` (the multi-step flow policy).
"""

from typing import NamedTuple

from visual_lps.agents.actor_critic import ActorCriticAgent, CriticConfig
from visual_lps.agents.base import AgentConfig, ChunkedAgent
from visual_lps.agents.dsrl import DSRLAgent, DSRLConfig
from visual_lps.agents.flow_bc import FlowBCAgent, FlowBCConfig
from visual_lps.agents.lps import LPSAgent, LPSConfig
from visual_lps.agents.meanflow_bc import MeanFlowBCAgent, MeanFlowBCConfig
from visual_lps.agents.qc_fql import QCFQLAgent, QCFQLConfig


class RegisteredAgent(NamedTuple):
    """An agent's config class and agent class, as `--agent NAME` selects them."""

    config: type[AgentConfig]
    agent: type[ChunkedAgent]


AGENTS = {
    "lps": RegisteredAgent(LPSConfig, LPSAgent),
    "meanflow-bc": RegisteredAgent(MeanFlowBCConfig, MeanFlowBCAgent),
    "flow-bc": RegisteredAgent(FlowBCConfig, FlowBCAgent),
    "qc-fql": RegisteredAgent(QCFQLConfig, QCFQLAgent),
    "dsrl": RegisteredAgent(DSRLConfig, DSRLAgent),
}

__all__ = [
    "AGENTS", "ActorCriticAgent", "AgentConfig", "ChunkedAgent", "CriticConfig", "DSRLAgent", "DSRLConfig",
    "FlowBCAgent", "FlowBCConfig", "LPSAgent", "LPSConfig", "MeanFlowBCAgent", "MeanFlowBCConfig",
    "QCFQLAgent", "QCFQLConfig", "RegisteredAgent",
]
