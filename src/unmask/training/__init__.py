"""Training: the built-in MDMs (:mod:`unmask.training.mdm`) and unmasking policies (coupling pre-training,
imitation of the oracle, GRPO with reference regularisation)."""
