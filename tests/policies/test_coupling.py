import pytest
import torch

from unmask.policies.coupling import MeanFieldCoupling, coupling_nll
from unmask.tasks import get_task


def test_untrained_coupling_is_close_to_the_identity_and_keeps_written_positions():
    coupling = MeanFieldCoupling(length=6, rounds=3)
    probs = torch.softmax(torch.randn(4, 6, 5), -1)
    masked = torch.rand(4, 6) < 0.6
    probs = torch.where(masked[..., None], probs, torch.nn.functional.one_hot(torch.arange(6) % 5, 5).float())
    log_q = coupling(probs, masked)
    assert torch.allclose(log_q.exp().sum(-1), torch.ones(4, 6), atol=1e-5)
    assert (log_q.exp() - probs).abs().max() < 0.05
    assert torch.equal(log_q[~masked], probs.clamp_min(1e-12).log()[~masked])
    a = coupling.strength
    assert torch.equal(a, a.t()) and torch.all(a.diagonal() == 0) and torch.all(a >= 0)


def test_coupling_learns_that_two_positions_exclude_each_other():
    """Positions 0 and 1 always hold different tokens, position 2 is independent; the MDM's marginals are
    unsure (both 0 and 1 lean to the same token). Fitting the NLL raises A_01 and not A_02, and the refined
    marginal of position 1 moves off the token position 0 has been given."""
    g = torch.Generator().manual_seed(0)
    n = 512
    t0 = torch.randint(0, 2, (n,), generator=g)
    target = torch.stack([t0, 1 - t0, torch.randint(0, 2, (n,), generator=g)], 1)
    probs = torch.full((n, 3, 2), 0.5)
    masked = torch.ones(n, 3, dtype=torch.bool)
    masked[:, 0] = False  # position 0 is written: its one-hot
    probs[:, 0] = torch.nn.functional.one_hot(t0, 2).float()
    coupling = MeanFieldCoupling(length=3, rounds=2)
    opt = torch.optim.Adam(coupling.parameters(), lr=0.1)
    before = coupling_nll(coupling, probs, masked, target).item()
    for _ in range(100):
        loss = coupling_nll(coupling, probs, masked, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
    a = coupling.strength
    assert loss.item() < before - 0.1
    assert a[0, 1] > 1.0 and a[0, 2] < 0.1
    q1 = coupling(probs, masked)[:, 1].exp()
    assert torch.all(q1.gather(1, t0[:, None]) < 0.3)


def test_coupling_refuses_another_layout_and_bad_sizes():
    with pytest.raises(ValueError, match="learned over 16 generated positions; this generation region has 81"):
        MeanFieldCoupling(16, 2)(torch.rand(1, 81, 10), torch.ones(1, 81, dtype=torch.bool))
    with pytest.raises(ValueError, match="rounds >= 1"):
        MeanFieldCoupling(16, 0)


def test_tasks_without_per_position_targets_say_so():
    with pytest.raises(NotImplementedError, match="gives no per-position target tokens"):
        get_task("gsm8k").targets([], None)
    sudoku = get_task("sudoku4")
    ex = sudoku.generate(2, seed=0, difficulty=6)
    assert sudoku.targets(ex, None).tolist() == [[d - 1 for d in e.solution] for e in ex]
