"""Deployment: a trained agent as a `Policy`, chunk execution for a control loop, the policy server and exports.
Torch and the core alone: nothing here imports Accelerate, a simulator or the trainer."""
