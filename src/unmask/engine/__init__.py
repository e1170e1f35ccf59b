"""The sampling engine: the step loop (:mod:`unmask.engine.loop`), its settings (:mod:`unmask.engine.config`), what a
policy sees at a step (:mod:`unmask.engine.state`), count schedules, token rules, cache strategies and random streams."""
