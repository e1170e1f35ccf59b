"""Bridges to the tools dLLM users already run: lm-evaluation-harness (:mod:`unmask.integrations.lm_eval`) and
drop-ins for the upstream samplers' ``generate`` functions (:mod:`unmask.integrations.upstream`), and SGLang's dLLM
server, which runs unmask's policies as a dLLM algorithm (:mod:`unmask.integrations.sglang`). The Hugging Face
Hub (:mod:`unmask.core.hub`) and experiment trackers (:mod:`unmask.core.tracking`) live in :mod:`unmask.core`."""
