"""What a UPO policy's learned coupling (``--coupling-rounds``) has found on 9x9 sudoku.

Nothing tells the coupling that sudoku has rows, columns and boxes: its pairwise strengths A_ij are fitted to the
MDM's rollouts (:mod:`unmask.training.pretrain`). This script compares them with the 20 peers of each cell: the share of
each cell's 20 strongest partners that are its peers, and the mean strength on peer and non-peer pairs. It draws
A_i. for four cells as 9x9 heat maps (PNG) and writes JSON.

Command (benchmarks/results/upo/coupling_structure.json and .png):
    python benchmarks/coupling_structure.py --policies upo-sudoku9-small,upo-sudoku9-base
"""

from __future__ import annotations

import argparse

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from common import command_line, run_info  # noqa: E402
from joint_marginals import unit_matrix  # noqa: E402

from unmask.api import SHIPPED_POLICIES  # noqa: E402
from unmask.core.checkpoint import save_json  # noqa: E402
from unmask.policies.learned import load_policy  # noqa: E402
from unmask.tasks import get_task  # noqa: E402

CELLS = (0, 10, 40, 80)


def peer_stats(strength: torch.Tensor, peers: torch.Tensor) -> dict[str, float]:
    """Share of each cell's ``k`` strongest partners that are peers (k = its peer count), mean A on/off peers."""
    k = int(peers[0].sum())
    top = strength.topk(k, dim=1).indices
    return {
        "top_k_peer_share": float(peers.gather(1, top).float().mean()),
        "mean_strength_peers": float(strength[peers].mean()),
        "mean_strength_others": float(strength[~peers & ~torch.eye(len(peers), dtype=torch.bool)].mean()),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policies", default="upo-sudoku9-small", help="shipped policy names or checkpoint directories")
    p.add_argument("--out", default="benchmarks/results/upo/coupling_structure.json")
    args = p.parse_args()
    units = unit_matrix(get_task("sudoku9"))
    peers = ((units.t() @ units) > 0) & ~torch.eye(units.shape[1], dtype=torch.bool)
    names = args.policies.split(",")
    fig, axes = plt.subplots(len(names), len(CELLS), figsize=(2.6 * len(CELLS), 2.6 * len(names)), squeeze=False)
    rows = []
    for r, name in enumerate(names):
        policy = load_policy(SHIPPED_POLICIES / name if (SHIPPED_POLICIES / name).is_dir() else name)
        if not policy.config.coupling_rounds:
            raise SystemExit(f"{name}: this policy has no coupling (trained without --coupling-rounds)")
        strength = policy.coupling.strength.detach().cpu()
        rows.append({"policy": name, "mdm": policy.config.mdm_name, **peer_stats(strength, peers)})
        print(
            f"{name}: {100 * rows[-1]['top_k_peer_share']:.1f}% of each cell's 20 strongest partners are its "
            f"peers; mean A on peers {rows[-1]['mean_strength_peers']:.3f}, others {rows[-1]['mean_strength_others']:.3f}"
        )
        for c, cell in enumerate(CELLS):
            ax = axes[r][c]
            ax.imshow(strength[cell].view(9, 9), cmap="viridis")
            ax.scatter([cell % 9], [cell // 9], marker="x", color="red")
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{policy.config.mdm_name}: A[cell {cell}]", fontsize=8)
    fig.suptitle("learned coupling strength of one cell (red x) with every other cell", fontsize=9)
    fig.tight_layout()
    png = args.out.rsplit(".", 1)[0] + ".png"
    fig.savefig(png, dpi=110)
    save_json(
        args.out, {"provenance": [run_info(command_line("benchmarks/coupling_structure.py", args))], "results": rows}
    )
    print(f"wrote {args.out} and {png}")


if __name__ == "__main__":
    main()
