import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def tiny_sudoku4_model():
    """A small, untrained built-in model laid out for 4x4 sudoku."""
    from unmask.models import MaskedTransformer, TransformerConfig
    from unmask.tasks import get_task

    task = get_task("sudoku4")
    vocab, mask = task.vocab()
    torch.manual_seed(0)
    return MaskedTransformer(TransformerConfig(vocab, mask, task.coordinates(), n_layer=1, n_head=2, n_embd=16)).eval()


@pytest.fixture
def stop_after_save(monkeypatch):
    """``stop_after_save(run, step)``: call ``run()`` (a trainer's ``train`` or :func:`unmask.api.train_policy`)
    and kill the GRPO run right after it saved ``step``."""
    from unmask.training.grpo import GRPOTrainer

    real_save = GRPOTrainer.save

    def stop(run, step: int) -> None:
        def save_then_stop(self):
            real_save(self)
            if self.step == step:
                raise KeyboardInterrupt

        monkeypatch.setattr(GRPOTrainer, "save", save_then_stop)
        with pytest.raises(KeyboardInterrupt):
            run()
        monkeypatch.setattr(GRPOTrainer, "save", real_save)

    return stop
