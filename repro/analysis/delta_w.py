"""`python -m repro.analysis.delta_w RUN_DIR [RUN_DIR ...] [--no-scaling] [--layer N] [--out results/tables]`

How the LoRA update dW = B A relates to the pre-trained W (Section 7.3, Table 7): W projected onto the top-r
singular directions of dW, ||U^T W V^T||_F, against the same projection onto W's own top-r directions and onto
those of a random matrix; with ||W||_F, ||dW||_F and the amplification factor ||dW||_F / ||U^T W V^T||_F (U, V
from dW). A small projection onto dW's directions with a large amplification means that dW amplifies
directions that W does not emphasise, the paper's reading.

dW is (alpha / r) B A, the update peft actually adds, unless --no-scaling; the outputs say which.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import torch

from repro.analysis.reference import read_run, write_table
from repro.paper import paper_data
from repro.analysis.subspace import LoraRun, load_lora_run, parse_layers
from repro.errors import ReproError, exit_on_user_error
from repro.models import get_module, load_model

DIRECTIONS = ("delta_w", "w", "random")


def top_directions(m: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    """U (d_out x r) and V (r x d_in): the top-r left and right singular vectors of m."""
    u, _, vh = torch.linalg.svd(m.double(), full_matrices=False)
    return u[:, :r], vh[:r]


def projection_norm(w: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> float:
    """||U^T W V^T||_F: the part of W inside the subspaces spanned by U (outputs) and V (inputs)."""
    return float(torch.linalg.matrix_norm(u.T @ w.double() @ v.T))


def amplification_factor(delta_w: torch.Tensor, w: torch.Tensor, r: int) -> float:
    """||dW||_F / ||U^T W V^T||_F with U, V the top-r singular vectors of dW."""
    u, v = top_directions(delta_w, r)
    return float(torch.linalg.matrix_norm(delta_w.double())) / projection_norm(w, u, v)


def delta_w_row(w: torch.Tensor, delta_w: torch.Tensor, r: int, generator: torch.Generator) -> dict[str, float]:
    """Table 7's quantities for one weight matrix."""
    random = torch.randn(w.shape, generator=generator, dtype=torch.float64)
    proj = {name: projection_norm(w, *top_directions(m, r))
            for name, m in (("delta_w", delta_w), ("w", w), ("random", random))}
    w_fro, dw_fro = float(torch.linalg.matrix_norm(w.double())), float(torch.linalg.matrix_norm(delta_w.double()))
    return {**{f"proj_{k}": v for k, v in proj.items()}, "w_fro": w_fro, "delta_w_fro": dw_fro,
            "amplification": dw_fro / proj["delta_w"]}


def pretrained_weights(run_dir: Path) -> tuple[torch.nn.Module, object]:
    """The run's pre-trained model rebuilt from its config (the frozen W that LoRA adapted). Seeded as
    `repro.train` seeds before building the model, so that a random-initialised `tiny` model is the same W."""
    _, cfg = read_run(run_dir)
    torch.manual_seed(cfg.seed)
    return load_model(cfg.model, cfg.task.num_labels), cfg


def run_table(run: LoraRun, scaling: bool, seed: int = 0) -> pd.DataFrame:
    """Every adapted (layer, matrix) of one run."""
    model, cfg = pretrained_weights(run.path)
    generator = torch.Generator().manual_seed(seed)
    scale = run.alpha / run.r if scaling else 1.0
    rows = []
    for (matrix, layer), f in sorted(run.factors.items(), key=lambda kv: (kv[0][1], "qkvo".find(kv[0][0]))):
        w = get_module(model, f"{cfg.model.layers}.{layer}.{cfg.model.matrices[matrix]}").weight.detach()
        delta_w = scale * (f["B"].double() @ f["A"].double())
        if delta_w.shape != w.shape:
            raise ReproError(f"{run.path}: dW {tuple(delta_w.shape)} does not match W {tuple(w.shape)} "
                             f"({matrix}, layer {layer})")
        rows.append({"r": run.r, "seed": run.seed, "layer": layer, "matrix": matrix,
                     **delta_w_row(w, delta_w, run.r, generator)})
    return pd.DataFrame(rows)


def table7_layout(long: pd.DataFrame, layer: int, matrix: str) -> pd.DataFrame:
    """Rows and columns as the paper's Table 7 for one layer and matrix; the paper's values beside for the
    ranks it reports (GPT-3 175B, layer 48, W_q)."""
    paper = paper_data("table7_delta_w")
    columns: dict[str, list[float | None]] = {}
    row_names = ["||U^T W V^T||_F", "||W||_F", "||dW||_F", "||dW||_F / ||U^T W V^T||_F (U,V of dW)"]
    for _, row in long[(long.layer == layer) & (long.matrix == matrix)].iterrows():
        tag = f"ours r={row.r} s{row.seed}"
        for direction, label in zip(DIRECTIONS, ("dW", "W", "Random")):
            columns[f"{tag}: {label}"] = [row[f"proj_{direction}"], row.w_fro,
                                          row.delta_w_fro if direction == "delta_w" else None,
                                          row.amplification if direction == "delta_w" else None]
    for r, proj in paper["projection_norms"].items():
        amp = paper["amplification"]["appendix_h4"].get(r)
        amp = paper["amplification"]["section_7_3"].get(r, amp)
        for direction, label in zip(DIRECTIONS, ("dW_q", "W_q", "Random")):
            columns[f"paper r={r}: {label}"] = [proj[direction], paper["w_fro"],
                                                paper["delta_w_fro"][r] if direction == "delta_w" else None,
                                                amp if direction == "delta_w" else None]
    return pd.DataFrame({"quantity": row_names, **columns})


def main(argv: list[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], prog="python -m repro.analysis.delta_w")
    parser.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR")
    parser.add_argument("--no-scaling", action="store_true", help="dW = B A instead of (alpha/r) B A")
    parser.add_argument("--layer", default=None, help="layer of the Table 7 layout (default: middle layer)")
    parser.add_argument("--matrix", default="q", help="matrix of the Table 7 layout (default q, as the paper)")
    parser.add_argument("--out", type=Path, default=Path("results/tables"))
    parser.add_argument("--name", default=None, help="file name suffix (default: from the runs' ranks and seeds)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random-matrix baseline")
    args = parser.parse_args(argv)

    runs = [load_lora_run(d) for d in args.run_dirs]
    if len({r.model_name for r in runs}) > 1:
        raise ReproError("runs use different models; give runs of one model")
    if any(args.matrix not in r.matrices() for r in runs):
        raise ReproError(f"--matrix {args.matrix}: not adapted in every run")
    layer = parse_layers(args.layer, runs[0].n_layers)[0]
    scaling = "dW = B A (no alpha/r scaling)" if args.no_scaling else "dW = (alpha/r) B A (the update peft applies)"
    long = pd.concat([run_table(r, not args.no_scaling, args.seed) for r in runs], ignore_index=True)
    name = args.name or "_".join(f"r{r.r}s{r.seed}" for r in runs) + ("_unscaled" if args.no_scaling else "")
    head = (f"{runs[0].scale_name} scale ({runs[0].budget}): {runs[0].task_name}, {runs[0].model_name}, LoRA; "
            f"{scaling}; random baseline seed {args.seed}.")
    written = write_table(table7_layout(long, layer, args.matrix), args.out / f"table7_{name}",
                          f"Table 7 analogue, layer {layer}, W_{args.matrix}. {head} Paper columns: GPT-3 175B, "
                          f"layer 48, W_q (amplification: Section 7.3 for r=4, Appendix H.4 otherwise).", ".3g")
    written += write_table(long, args.out / f"table7_{name}_layers",
                           f"Table 7 quantities per layer and matrix. {head} proj_X = ||U^T W V^T||_F with U, V "
                           f"the top-r singular vectors of X; amplification = delta_w_fro / proj_delta_w.", ".4g")
    for path in written:
        print(path)
    return written


if __name__ == "__main__":
    exit_on_user_error(main)()
