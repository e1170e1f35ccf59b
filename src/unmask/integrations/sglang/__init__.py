"""unmask's policies as an SGLang dLLM algorithm (``--dllm-algorithm UnmaskPolicy``), see docs/deploy.md.

* :mod:`unmask.integrations.sglang.hook`: one denoise step of each request's block under an unmask policy,
  framework-free (:class:`~unmask.integrations.sglang.hook.BlockPolicy`), and its settings
  (:class:`~unmask.integrations.sglang.hook.ServedPolicyConfig`, the ``--dllm-algorithm-config`` file).
* :mod:`unmask.integrations.sglang.shim`: the interface of SGLang's algorithm package this relies on, checked
  without importing SGLang, and ``unmask sglang install`` / ``uninstall`` (the one-line registration module).
* :mod:`unmask.integrations.sglang.algorithm`: the ``DllmAlgorithm`` subclass SGLang runs (imports SGLang).
"""
