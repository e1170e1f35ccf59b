"""Reinforcement learning of unmasking policies (GRPO with reference regularisation)."""
