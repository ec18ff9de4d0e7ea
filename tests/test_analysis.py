"""Section 7 analyses: phi (Eq. 4) on constructed subspaces, Table 7's quantities on a dW of known structure,
the CLIs on a tiny LoRA run, and the shipped paper values against the reference file."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from repro.analysis import delta_w, subspace
from repro.paper import paper_data
from repro.methods import apply_method
from repro.models import get_module, load_model


def orthonormal(d: int, k: int, seed: int = 0) -> torch.Tensor:
    q, _ = torch.linalg.qr(torch.randn(d, k, generator=torch.Generator().manual_seed(seed), dtype=torch.float64))
    return q


# ---------------------------------------------------------------------------- phi


def test_phi_identical_subspaces_is_one_on_the_diagonal():
    u = orthonormal(50, 8)
    grid = subspace.phi_grid(u, u)
    assert np.allclose(np.diag(grid), 1.0)
    # top-i vs top-j of the same basis: the overlap is min(i, j) directions, normalised by min(i, j)
    assert np.allclose(grid, 1.0)


def test_phi_orthogonal_subspaces_is_zero():
    q = orthonormal(50, 12)
    assert np.allclose(subspace.phi_grid(q[:, :4], q[:, 4:]), 0.0)


def test_phi_min_normalisation_counts_shared_directions():
    """u2 = [first 2 directions of u1, 6 orthogonal ones]: ||u1_i^T u2_j||^2 = #shared = min(i, j, 2)."""
    q = orthonormal(60, 14)
    u1, u2 = q[:, :8], torch.cat([q[:, :2], q[:, 8:14]], dim=1)
    grid = subspace.phi_grid(u1, u2)
    for i in range(1, 9):
        for j in range(1, 9):
            assert grid[i - 1, j - 1] == pytest.approx(min(i, j, 2) / min(i, j))


def test_phi_of_random_matrices_is_in_unit_interval_and_near_chance():
    g = torch.Generator().manual_seed(1)
    a1, a2 = torch.randn(8, 400, generator=g), torch.randn(64, 400, generator=g)
    grid = subspace.phi(a1, a2, "A")
    assert grid.shape == (8, 64)
    assert grid.min() >= 0.0 and grid.max() <= 1.0 + 1e-12
    assert grid[0, 0] < 0.05  # chance for one direction in 400 dimensions is 1/400
    assert grid[7, 63] == pytest.approx(64 / 400, abs=0.05)  # expected overlap j/d once i directions are spanned


def test_phi_uses_right_singular_vectors_of_a_and_left_of_b():
    """A = S V (r x d) shares V's row space with any other A' = S' V; B = U S shares U's column space."""
    v = orthonormal(40, 4).T
    a1 = torch.diag(torch.tensor([4.0, 3.0, 2.0, 1.0], dtype=torch.float64)) @ v
    a2 = torch.randn(4, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64) @ v
    assert subspace.phi(a1, a2, "A")[3, 3] == pytest.approx(1.0)
    assert subspace.phi(a1.T, a2.T, "B")[3, 3] == pytest.approx(1.0)
    assert subspace.phi(a1, a1, "A")[0, 0] == pytest.approx(1.0)


def test_summarise_reads_the_grid():
    grid = np.full((8, 64), 0.5)
    grid[0, 0] = 0.9
    s = subspace.summarise(grid)
    assert s["phi_11"] == pytest.approx(0.9)
    assert s["phi_grid_mean"] == pytest.approx(0.5 + 0.4 / (8 * 64))


# ---------------------------------------------------------------------------- Table 7 quantities


def test_amplification_factor_of_known_structure():
    """W = diag(10, 5, 1, ...); dW = 3 e_{k} e_{k}^T on a direction where W is 1: projection = 1, factor = 3."""
    d = 20
    w = torch.diag(torch.tensor([10.0, 5.0] + [1.0] * (d - 2), dtype=torch.float64))
    dw = torch.zeros(d, d, dtype=torch.float64)
    dw[7, 7] = 3.0
    assert delta_w.amplification_factor(dw, w, r=1) == pytest.approx(3.0)
    row = delta_w.delta_w_row(w, dw, 1, torch.Generator().manual_seed(0))
    assert row["proj_w"] == pytest.approx(10.0)  # W's top direction projects W onto its top singular value
    assert row["proj_delta_w"] == pytest.approx(1.0)
    assert row["delta_w_fro"] == pytest.approx(3.0)
    assert row["w_fro"] == pytest.approx(float(torch.linalg.matrix_norm(w)))
    # a dW aligned with W's top direction is not amplified: ||dW|| / ||U^T W V^T|| = 3 / 10
    aligned = torch.zeros(d, d, dtype=torch.float64)
    aligned[0, 0] = 3.0
    assert delta_w.amplification_factor(aligned, w, r=1) == pytest.approx(0.3)


def test_projection_norm_matches_singular_values():
    w = torch.randn(30, 20, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = torch.linalg.svdvals(w)
    u, v = delta_w.top_directions(w, 4)
    assert delta_w.projection_norm(w, u, v) == pytest.approx(float(s[:4].norm()))


# ---------------------------------------------------------------------------- CLIs on tiny runs


def fake_lora_run(compose, root, r: int, seed: int):
    """A run directory as `repro.train` writes it, with random (non-zero) B so that dW != 0."""
    cfg = compose("model=tiny-bert", "task=glue/sst2", "method=lora", f"method.r={r}", f"method.alpha={r}",
                  f"seed={seed}")
    torch.manual_seed(seed)
    adapted = apply_method(load_model(cfg.model, cfg.task.num_labels), cfg.method, cfg.model)
    with torch.no_grad():
        for name, p in adapted.model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    run_dir = root / f"run_r{r}_s{seed}"
    adapted.save(run_dir / "adapter")
    record = {"status": "complete", "scale": "smoke", "seed": seed, "weights": {"dir": "adapter"},
              "config": OmegaConf.to_container(cfg, resolve=True)}
    (run_dir / "result.json").write_text(json.dumps(record))
    return run_dir, adapted, cfg


def test_subspace_cli_writes_figures_and_summary(compose, tmp_path):
    run8, _, _ = fake_lora_run(compose, tmp_path, 2, 0)
    run64, _, _ = fake_lora_run(compose, tmp_path, 8, 1)
    written = subspace.main([str(run64), str(run8), "--layer", "1", "--out", str(tmp_path / "fig")])
    names = {p.name for p in written}
    assert {"subspace_r2_vs_r8_seed0-1_A_layer1.png", "subspace_r2_vs_r8_seed0-1_B_layer1.pdf",
            "subspace_r2_vs_r8_seed0-1_summary.csv"} <= names
    table = __import__("pandas").read_csv(tmp_path / "fig" / "subspace_r2_vs_r8_seed0-1_summary.csv")
    assert len(table) == 2 * 2 * 2  # layers x matrices (q, v) x factors (A, B)
    assert table[["phi_11", "phi_grid_mean", "random_phi_11"]].apply(lambda c: c.between(0, 1).all()).all()
    assert (tmp_path / "fig" / "subspace_r2_vs_r8_seed0-1_summary.md").read_text().startswith("Subspace")


def test_load_lora_run_maps_modules_to_paper_names(compose, tmp_path):
    run_dir, adapted, cfg = fake_lora_run(compose, tmp_path, 4, 0)
    run = subspace.load_lora_run(run_dir)
    assert run.matrices() == ["q", "v"] and run.r == 4
    assert run.factors[("q", 1)]["A"].shape == (4, cfg.model.d_model)
    key = "base_model.model.bert.encoder.layer.1.attention.self.query.lora_A.default.weight"
    assert torch.equal(run.factors[("q", 1)]["A"], dict(adapted.model.named_parameters())[key].detach())


def test_delta_w_cli_uses_pretrained_w_and_states_scaling(compose, tmp_path):
    run_dir, adapted, cfg = fake_lora_run(compose, tmp_path, 4, 0)
    written = delta_w.main([str(run_dir), "--no-scaling", "--out", str(tmp_path / "tab")])
    long = __import__("pandas").read_csv(tmp_path / "tab" / "table7_r4s0_unscaled_layers.csv")
    torch.manual_seed(0)
    w = get_module(load_model(cfg.model, 2), "bert.encoder.layer.0.attention.self.query").weight
    row = long[(long.layer == 0) & (long.matrix == "q")].iloc[0]
    assert row.w_fro == pytest.approx(float(w.detach().norm()), rel=1e-5)
    assert row.amplification == pytest.approx(row.delta_w_fro / row.proj_delta_w)
    md = (tmp_path / "tab" / "table7_r4s0_unscaled.md").read_text()
    assert "no alpha/r scaling" in md and "paper r=64: W_q" in md
    assert len(written) == 4


def test_cli_bad_input_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        from repro.errors import exit_on_user_error

        exit_on_user_error(subspace.main)([str(tmp_path), str(tmp_path)])
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().startswith("error: ")


# ---------------------------------------------------------------------------- shipped paper values


def test_table7_copy_matches_paper(paper_reference):
    ref, ours = paper_reference["table7_delta_w"], paper_data("table7_delta_w")
    assert ours["layer"] == ref["layer"]
    for cell in ref["projection_norms"]:
        key = {"delta_W_q": "delta_w", "W_q": "w", "random": "random"}[cell["directions_of"]]
        assert ours["projection_norms"][cell["r"]][key] == cell["value"]
    assert ours["w_fro"] == ref["W_q_fro"]["value"]
    assert ours["delta_w_fro"] == {c["r"]: c["value"] for c in ref["delta_W_q_fro"]}
    amp = paper_reference["formulas"]["amplification_factor"]["reported"]
    assert ours["amplification"]["section_7_3"][4] == amp["section_7_3_r4"]["value"]
    assert ours["amplification"]["appendix_h4"] == {4: amp["appendix_h4_r4"]["value"],
                                                    64: amp["appendix_h4_r64"]["value"]}


def test_initial_a_replays_the_runs_initialisation(compose, tmp_path):
    """fake_lora_run seeds like repro.train and leaves A untouched: the replayed A_init is A itself."""
    run_dir, _, _ = fake_lora_run(compose, tmp_path, 4, 3)
    run = subspace.load_lora_run(run_dir)
    init = subspace.initial_a(run)
    assert set(init) == set(run.factors)
    assert all(torch.equal(init[k], run.factors[k]["A"]) for k in init)
    with torch.no_grad():
        run.factors[("q", 0)]["A"] += 0.5
    assert 0 < subspace.add_delta_a(run) < 1
    assert torch.allclose(run.factors[("q", 0)]["dA"], torch.full_like(init[("q", 0)], 0.5))
