"""Environments agents are evaluated in."""
