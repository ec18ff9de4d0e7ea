"""`python -m repro.analysis.subspace RUN_DIR_1 RUN_DIR_2 [--matrix q,v] [--layer N|all] [--out results/figures]`

Normalised subspace similarity between two LoRA runs (Section 7.2, Eq. 4, Figures 3 and 4):

    phi(A1, A2, i, j) = ||U1_i^T U2_j||_F^2 / min(i, j)   in [0, 1]

where U1_i holds the top-i right-singular vectors of the learned A1 (r1 x d; the rows of Vh, as columns) and
U2_j the top-j of A2. The B variant uses the left-singular vectors of B (d x r). Random Gaussian matrices of the
same shapes give the chance level (about i*j / (d * min(i, j)) for small i, j). Outputs heatmaps (PNG and PDF)
and a per-layer summary table (markdown and CSV).

With --delta-a also dA = A - A_init: A starts random (B starts at zero), so after a short run A is mostly its
initialisation and phi on A mostly compares two random draws. A_init is replayed: `repro.train` seeds with
the run's seed and then builds the model and the method, so the same calls give the same initial A.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file

from repro.analysis.reference import read_run, write_table
from repro.errors import ReproError, exit_on_user_error

FACTORS = ("A", "B")
RIGHT_SINGULAR = ("A", "dA")  # factors whose rows span the input space
# i ranges over the smaller rank up to this bound in the grid-mean summary (the paper's 1 <= i <= 8)
SUMMARY_I_MAX = 8


# ---------------------------------------------------------------------------- maths


def singular_basis(m: torch.Tensor, factor: str) -> torch.Tensor:
    """Orthonormal columns (d x k), sorted by singular value: right-singular vectors of A (r x d), left of B."""
    u, _, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return vh.T if factor in RIGHT_SINGULAR else u


def phi_grid(u1: torch.Tensor, u2: torch.Tensor) -> np.ndarray:
    """phi[i-1, j-1] = ||u1[:, :i]^T u2[:, :j]||_F^2 / min(i, j) for every i <= k1, j <= k2 (Eq. 4).

    The squared Frobenius norm of a top-left block of M = u1^T u2 is a 2-D prefix sum of M**2."""
    if u1.shape[0] != u2.shape[0]:
        raise ValueError(f"bases live in different spaces: {u1.shape[0]} vs {u2.shape[0]} rows")
    sq = (u1.double().T @ u2.double()) ** 2
    cum = sq.cumsum(0).cumsum(1).numpy()
    i = np.arange(1, cum.shape[0] + 1)[:, None]
    j = np.arange(1, cum.shape[1] + 1)[None, :]
    return cum / np.minimum(i, j)


def phi(m1: torch.Tensor, m2: torch.Tensor, factor: str = "A") -> np.ndarray:
    """The phi grid of two LoRA factors of the same kind (both A, or both B)."""
    return phi_grid(singular_basis(m1, factor), singular_basis(m2, factor))


def random_like(m: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    return torch.randn(m.shape, generator=generator, dtype=torch.float64)


def summarise(grid: np.ndarray) -> dict[str, float]:
    """phi at i=j=1, the mean of the diagonal (i=j), and the mean over i <= min(8, r1) x all j."""
    k = min(grid.shape)
    return {"phi_11": float(grid[0, 0]), "phi_diag_mean": float(np.mean([grid[n, n] for n in range(k)])),
            "phi_grid_mean": float(grid[:SUMMARY_I_MAX].mean())}


# ---------------------------------------------------------------------------- runs


@dataclass
class LoraRun:
    """The learned LoRA factors of one run: factors[(matrix, layer)] = {"A": r x d_in, "B": d_out x r}."""

    path: Path
    label: str
    r: int
    alpha: float
    scale_name: str
    model_name: str
    task_name: str
    seed: int
    n_layers: int
    factors: dict[tuple[str, int], dict[str, torch.Tensor]]
    budget: str = ""  # training examples x epochs, for captions

    def matrices(self) -> list[str]:
        return sorted({m for m, _ in self.factors}, key="qkvo".find)


def load_lora_run(run_dir: Path) -> LoraRun:
    """Read the adapter and map peft's module names back to the paper's q/k/v/o via `config.model.matrices`."""
    record, cfg = read_run(run_dir)
    if cfg.method.name != "lora":
        raise ReproError(f"{run_dir} is a {cfg.method.name} run, not LoRA")
    weights = run_dir / record.get("weights", {}).get("dir", "adapter") / "adapter_model.safetensors"
    if not weights.is_file():
        raise ReproError(f"{run_dir} has no LoRA weights at {weights}")
    module_to_matrix = {module: name for name, module in cfg.model.matrices.items()}
    pattern = re.compile(rf"{re.escape(cfg.model.layers)}\.(\d+)\.(.+)\.lora_([AB])(?:\.\w+)?\.weight$")
    factors: dict[tuple[str, int], dict[str, torch.Tensor]] = {}
    for key, tensor in load_file(weights).items():
        match = pattern.search(key)
        if match and match.group(2) in module_to_matrix:
            layer, matrix, factor = int(match.group(1)), module_to_matrix[match.group(2)], match.group(3)
            factors.setdefault((matrix, layer), {})[factor] = tensor.float()
    if not factors:
        raise ReproError(f"no LoRA A/B tensors under {cfg.model.layers} in {weights}")
    label = f"r={cfg.method.r}, seed {cfg.seed}"
    budget = f"{record.get('train_examples', '?')} train examples x {cfg.train.epochs} epochs"
    return LoraRun(run_dir, label, int(cfg.method.r), float(cfg.method.alpha), str(record.get("scale")),
                   str(cfg.model.name), str(cfg.task.name), int(cfg.seed), int(cfg.model.n_layers), factors, budget)


def initial_a(run: LoraRun) -> dict[tuple[str, int], torch.Tensor]:
    """The run's A matrices at initialisation, rebuilt by replaying the seeding and construction of `repro.train`."""
    from repro.methods import apply_method
    from repro.models import load_model
    from repro.runner import seed_everything

    _, cfg = read_run(run.path)
    seed_everything(cfg.seed)
    adapted = apply_method(load_model(cfg.model, cfg.task.num_labels), cfg.method, cfg.model)
    params = dict(adapted.model.named_parameters())
    init = {}
    for matrix, layer in run.factors:
        prefix = f"base_model.model.{cfg.model.layers}.{layer}.{cfg.model.matrices[matrix]}.lora_A."
        init[(matrix, layer)] = next(p for n, p in params.items() if n.startswith(prefix)).detach().float()
    return init


def add_delta_a(run: LoraRun) -> float:
    """Store dA = A - A_init as factor "dA"; returns the largest ||dA|| / ||A||. A replay that missed the
    initialisation would give about sqrt(2) (two independent draws), so above 1 is an error."""
    worst = 0.0
    for key, a0 in initial_a(run).items():
        a = run.factors[key]["A"]
        run.factors[key]["dA"] = a - a0
        worst = max(worst, float((a - a0).norm() / a.norm()))
    if worst > 1.0:
        raise ReproError(f"{run.path}: could not replay the initial A (||A - A_init|| / ||A|| = {worst:.2f})")
    return worst


def check_comparable(run1: LoraRun, run2: LoraRun) -> None:
    if run1.model_name != run2.model_name:
        raise ReproError(f"runs use different models ({run1.model_name} vs {run2.model_name}); phi needs one space")


def order_by_rank(run1: LoraRun, run2: LoraRun) -> tuple[LoraRun, LoraRun]:
    """The smaller rank first, so that i (rows) is the short axis as in Figure 3."""
    return (run1, run2) if run1.r <= run2.r else (run2, run1)


# ---------------------------------------------------------------------------- outputs


def summary_table(run1: LoraRun, run2: LoraRun, matrices: list[str], layers: list[int], seed: int = 0,
                  factors: tuple[str, ...] = FACTORS) -> pd.DataFrame:
    """Per layer, matrix and factor: phi summaries for the two runs and for random matrices of the same shapes."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for layer in layers:
        for matrix in matrices:
            for factor in factors:
                m1, m2 = run1.factors[(matrix, layer)][factor], run2.factors[(matrix, layer)][factor]
                learned = summarise(phi(m1, m2, factor))
                chance = summarise(phi(random_like(m1, generator), random_like(m2, generator), factor))
                rows.append({"layer": layer, "matrix": matrix, "factor": factor, **learned,
                             **{f"random_{k}": v for k, v in chance.items()}})
    return pd.DataFrame(rows)


def heatmap_grids(run1: LoraRun, run2: LoraRun, matrices: list[str], layer: int, factor: str,
                  seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """(title, grid) panels: each matrix, then a random Gaussian pair of the first matrix's shapes."""
    panels = [(f"$\\Delta W_{matrix}$", phi(run1.factors[(matrix, layer)][factor],
                                            run2.factors[(matrix, layer)][factor], factor)) for matrix in matrices]
    generator = torch.Generator().manual_seed(seed)
    m1, m2 = run1.factors[(matrices[0], layer)][factor], run2.factors[(matrices[0], layer)][factor]
    panels.append(("Random Gaussian", phi(random_like(m1, generator), random_like(m2, generator), factor)))
    return panels


def plot_heatmaps(panels: list[tuple[str, np.ndarray]], zoom: int | None, title: str, stem: Path) -> list[Path]:
    """Figure 3 layout (full grids, then the same zoomed to i, j <= `zoom`) or Figure 4's (zoom=None)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = panels + ([(f"{t} (i, j $\\leq$ {zoom})", g[:zoom, :zoom]) for t, g in panels] if zoom else [])
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.0), squeeze=False)
    for ax, (panel_title, grid) in zip(axes[0], shown):
        image = ax.imshow(grid, vmin=0.0, vmax=1.0, cmap="viridis", origin="lower", aspect="auto",
                          extent=(0.5, grid.shape[1] + 0.5, 0.5, grid.shape[0] + 0.5), interpolation="nearest")
        ax.set_title(panel_title, fontsize=9)
        ax.set_xlabel("j")
        ax.set_ylabel("i")
    fig.colorbar(image, ax=axes[0].tolist(), fraction=0.02, pad=0.02)
    fig.suptitle(title, fontsize=9, y=1.08)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return paths


# ---------------------------------------------------------------------------- CLI


def parse_layers(value: str | None, n_layers: int) -> list[int]:
    """Default: the middle layer (the paper shows layer 48 of GPT-3's 96); `all` for every layer."""
    if value is None:
        return [n_layers // 2]
    if value == "all":
        return list(range(n_layers))
    try:
        layers = [int(v) for v in value.split(",")]
    except ValueError:
        raise ReproError(f"--layer must be 'all' or comma-separated integers, got {value!r}") from None
    bad = [n for n in layers if not 0 <= n < n_layers]
    if bad:
        raise ReproError(f"--layer {bad[0]} out of range; the model has layers 0..{n_layers - 1}")
    return layers


def parse_matrices(value: str, run1: LoraRun, run2: LoraRun) -> list[str]:
    matrices = [m.strip() for m in value.split(",") if m.strip()]
    common = set(run1.matrices()) & set(run2.matrices())
    missing = [m for m in matrices if m not in common]
    if not matrices or missing:
        raise ReproError(f"--matrix {','.join(missing) or value!r}: both runs adapt only {','.join(sorted(common))}")
    return matrices


def default_name(run1: LoraRun, run2: LoraRun) -> str:
    if run1.r != run2.r:
        return f"r{run1.r}_vs_r{run2.r}_seed{run1.seed}" + (f"-{run2.seed}" if run1.seed != run2.seed else "")
    return f"r{run1.r}_seed{run1.seed}_vs_seed{run2.seed}"


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="python -m repro.analysis.subspace")
    parser.add_argument("run_dirs", nargs=2, type=Path, metavar="RUN_DIR")
    parser.add_argument("--matrix", default="q,v", help="paper matrix names, comma-separated (default q,v)")
    parser.add_argument("--layer", default=None, help="heatmap layer(s): N, N,M or all (default: middle layer)")
    parser.add_argument("--out", type=Path, default=Path("results/figures"))
    parser.add_argument("--name", default=None, help="file name stem (default: from the runs' ranks and seeds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random Gaussian baseline")
    parser.add_argument("--delta-a", action="store_true", help="also A - A_init (initialisation replayed)")
    args = parser.parse_args(argv)

    run1, run2 = order_by_rank(*(load_lora_run(d) for d in args.run_dirs))
    check_comparable(run1, run2)
    matrices = parse_matrices(args.matrix, run1, run2)
    layers = parse_layers(args.layer, run1.n_layers)
    name = args.name or default_name(run1, run2)
    caption = (f"{run1.scale_name} scale ({run1.budget}): {run1.task_name}, {run1.model_name}, LoRA on "
               f"{','.join(matrices)}: {run1.label} vs {run2.label}")
    zoom = min(run1.r, run2.r) if run1.r != run2.r else None
    factors = FACTORS + (("dA",) if args.delta_a else ())
    replay = [add_delta_a(run) for run in (run1, run2)] if args.delta_a else []
    kinds = {"A": "right-singular vectors of A", "B": "left-singular vectors of B",
             "dA": "right-singular vectors of A - A_init"}
    written = []
    for layer in layers:
        for factor in factors:
            kind = kinds[factor]
            title = f"phi({factor}: {run1.label} vs {run2.label}), layer {layer}, {kind}\n{caption}"
            panels = heatmap_grids(run1, run2, matrices, layer, factor, args.seed)
            written += plot_heatmaps(panels, zoom, title, args.out / f"subspace_{name}_{factor}_layer{layer}")
    table = summary_table(run1, run2, matrices, list(range(run1.n_layers)), args.seed, factors)
    note = (f"Subspace similarity phi (Eq. 4), every layer. {caption}. phi_11: i=j=1; phi_diag_mean: mean of "
            f"phi(i,i); phi_grid_mean: mean over i<={min(SUMMARY_I_MAX, run1.r)}, j<={run2.r}; random_*: Gaussian "
            f"matrices of the same shapes (seed {args.seed}). Factor A: right-singular vectors, B: left-singular."
            + (f" dA = A - A_init (replayed; max ||dA||/||A|| = {max(replay):.2f})." if replay else ""))
    written += write_table(table, args.out / f"subspace_{name}_summary", note, float_fmt=".3f")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    exit_on_user_error(main)()
