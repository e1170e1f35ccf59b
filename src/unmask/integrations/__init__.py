"""Bridges to the tools dLLM users already run: lm-evaluation-harness (:mod:`unmask.integrations.lm_eval`) and
drop-ins for the upstream samplers' ``generate`` functions (:mod:`unmask.integrations.upstream`). The Hugging Face
Hub (:mod:`unmask.core.hub`) and experiment trackers (:mod:`unmask.core.tracking`) live in :mod:`unmask.core`."""
