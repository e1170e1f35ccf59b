import json

import pytest
import torch

from unmask.core.checkpoint import save_checkpoint
from unmask.models import load_model
from unmask.training.mdm import MDMTrainConfig, train_mdm


def small_cfg(tmp_path, steps):
    return MDMTrainConfig(
        task="sudoku4",
        output_dir=str(tmp_path / "mdm"),
        n_layer=1,
        n_head=2,
        n_embd=16,
        max_steps=steps,
        batch_size=8,
        save_steps=3,
        logging_steps=1,
        warmup_steps=2,
    )


def test_train_save_load_roundtrip(tmp_path):
    out = train_mdm(small_cfg(tmp_path, 4), progress=False)
    model = load_model(str(out))
    assert model.vocab_size == 5 and model.mask_id == 4
    x = torch.full((2, 16), 4, device=model.device)
    assert model(x).logits.shape == (2, 16, 5)
    assert model(x, output_hidden_states=True).hidden_states.shape == (2, 16, 16)
    assert not any(p.requires_grad for p in model.parameters())


def test_resume_is_exact(tmp_path):
    straight = load_model(str(train_mdm(small_cfg(tmp_path / "a", 6), progress=False)))
    # the same run, interrupted right after its step-3 save, then resumed
    cfg_c = small_cfg(tmp_path / "c", 6)
    import unmask.training.mdm as tm

    calls = {"n": 0}
    real = tm.save_checkpoint

    def crash_after_step_3_save(*a, **k):
        real(*a, **k)
        calls["n"] += 1
        if calls["n"] == 2:  # the saves of steps 0 and 3
            raise KeyboardInterrupt

    tm.save_checkpoint = crash_after_step_3_save
    try:
        with pytest.raises(KeyboardInterrupt):
            train_mdm(cfg_c, progress=False)
    finally:
        tm.save_checkpoint = real
    resumed = load_model(str(train_mdm(cfg_c, resume=True, progress=False)))
    for (k, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k
    steps = [int(line.split(",")[0]) for line in (tmp_path / "c" / "mdm" / "metrics.csv").read_text().split()[1:]]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_resume_refuses_changed_settings(tmp_path):
    train_mdm(small_cfg(tmp_path, 3), progress=False)
    cfg = small_cfg(tmp_path, 3)
    cfg.learning_rate = 0.5
    with pytest.raises(ValueError, match="settings differ"):
        train_mdm(cfg, resume=True, progress=False)


def test_mismatched_checkpoint_is_a_clear_error(tmp_path):
    out = train_mdm(small_cfg(tmp_path, 3), progress=False)
    meta = json.loads((out / "config.json").read_text())
    meta["model"]["n_embd"] = 32
    (out / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="do not match their config.json"):
        load_model(str(out))


def test_unknown_model_lists_builtins(tmp_path):
    with pytest.raises(ValueError, match="built-in models:"):
        load_model(str(tmp_path / "nothing"))


def test_device_option_of_builtin_models():
    assert load_model("sudoku4", device="cpu").device == torch.device("cpu")
    with pytest.raises(ValueError, match="invalid device 'gpu0'"):
        load_model("sudoku4", device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA GPU is visible.*--device cpu"):
            load_model("sudoku4", device="cuda")
    with pytest.raises(ValueError, match="apply to Hugging Face models"):
        load_model("sudoku4", device="cpu", dtype="float16")


def test_wrong_length_input_is_explained(tiny_sudoku4_model):
    with pytest.raises(ValueError, match="sequences of length 16"):
        tiny_sudoku4_model(torch.zeros(1, 81, dtype=torch.long))
    with pytest.raises(ValueError, match="token ids must lie"):
        tiny_sudoku4_model(torch.full((1, 16), 9))


def test_atomic_save_leaves_old_checkpoint_on_failure(tmp_path, tiny_sudoku4_model, monkeypatch):
    save_checkpoint(tmp_path, tiny_sudoku4_model, {"v": 1})
    before = (tmp_path / "model.safetensors").read_bytes()
    import unmask.core.checkpoint as ck

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ck, "_write_bytes", boom)
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, tiny_sudoku4_model, {"v": 2})
    assert (tmp_path / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "manifest.json", "model.safetensors"]
