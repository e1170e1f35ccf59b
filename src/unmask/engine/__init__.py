"""The sampling engine: the step loop (:mod:`unmask.engine.loop`), what a policy sees at a step
(:mod:`unmask.engine.state`), count schedules, token rules, block caches and random streams."""
