"""AdaLoRA (Zhang et al. 2023) through peft: adapters in SVD form P diag(E) Q, whose ranks start at `init_r` and
are pruned by importance to an average of `target_r` per matrix during training.

The schedule is given as fractions of the run's optimizer steps (warm-up `tinit_fraction`, final
`tfinal_fraction`, pruning every `update_interval` steps), turned into peft's step counts when the training loop
reports its total (`TrainingHooks.on_schedule`), so a user never computes it. The orthogonality regulariser
(||P^T P - I||_F + ||Q Q^T - I||_F, averaged over adapter matrices, weight `orth_reg_weight`) is added by our hook,
not by peft's forward (which adds it only where the model computes the loss itself): both loops use it the same.
The final rank of each matrix goes to the result record.
"""

from __future__ import annotations

import torch
from omegaconf import DictConfig
from peft import AdaLoraConfig, TaskType, get_peft_model
from torch import nn

from repro.errors import ConfigError
from repro.methods.base import Adapted, TrainingHooks, saved_head, target_modules


def adalora_config(method_cfg: DictConfig, model_cfg: DictConfig, task_type: TaskType) -> AdaLoraConfig:
    if not 0 < method_cfg.target_r <= method_cfg.init_r:
        raise ConfigError(f"adalora needs 0 < target_r <= init_r, got target_r={method_cfg.target_r}, "
                          f"init_r={method_cfg.init_r}")
    # a provisional schedule; the real one is set in `on_schedule` once the run's total steps are known
    return AdaLoraConfig(task_type=task_type, init_r=method_cfg.init_r, target_r=method_cfg.target_r,
                         lora_alpha=method_cfg.alpha, lora_dropout=method_cfg.dropout,
                         target_modules=target_modules(method_cfg, model_cfg), modules_to_save=saved_head(model_cfg),
                         beta1=method_cfg.beta1, beta2=method_cfg.beta2, deltaT=method_cfg.update_interval,
                         orth_reg_weight=0.0, tinit=0, tfinal=0, total_step=1)


def schedule(method_cfg: DictConfig, total_steps: int) -> tuple[int, int]:
    """(tinit, tfinal) in steps; at least one step of rank pruning must remain between them."""
    tinit = int(method_cfg.tinit_fraction * total_steps)
    tfinal = int(method_cfg.tfinal_fraction * total_steps)
    if tinit >= total_steps - tfinal:
        raise ConfigError(f"adalora: {total_steps} optimizer steps leave no rank-pruning phase between the warm-up "
                          f"({tinit}) and the final phase ({tfinal}); train longer or lower the fractions")
    return tinit, tfinal


def orthogonality(model: nn.Module) -> torch.Tensor:
    terms = [torch.linalg.matrix_norm((p @ p.T if "lora_A" in n else p.T @ p)
                                      - torch.eye(p.shape[0] if "lora_A" in n else p.shape[1], device=p.device))
             for n, p in model.named_parameters() if p.requires_grad and ("lora_A" in n or "lora_B" in n)]
    return torch.stack(terms).mean() if terms else torch.zeros(())


def final_ranks(peft_model: nn.Module) -> dict[str, int]:
    """Rank per adapted matrix: peft's last allocation (`rank_pattern`, a keep-mask per matrix) where there is one,
    otherwise the singular values not pruned to zero."""
    pattern = peft_model.peft_config["default"].rank_pattern
    if pattern:
        return {name.removesuffix(".default").removesuffix(".lora_E"): int(sum(mask)) for name, mask in pattern.items()}
    return {n.removesuffix(".default").removesuffix(".lora_E"): int((p != 0).sum())
            for n, p in peft_model.named_parameters() if n.endswith("lora_E.default")}


def apply_adalora(model: nn.Module, method_cfg: DictConfig, model_cfg: DictConfig, task_type: TaskType) -> Adapted:
    peft_model = get_peft_model(model, adalora_config(method_cfg, model_cfg, task_type))
    config = peft_model.peft_config["default"]

    def on_schedule(total_steps: int) -> None:
        config.tinit, config.tfinal = schedule(method_cfg, total_steps)
        config.total_step = total_steps

    def report() -> dict:
        ranks = final_ranks(peft_model)
        return {"final_ranks": ranks, "rank_budget": method_cfg.target_r * len(ranks),
                "ranks_total": sum(ranks.values()),
                "schedule": {"tinit": config.tinit, "tfinal": config.tfinal, "total_step": config.total_step,
                             "deltaT": config.deltaT}}

    hooks = TrainingHooks(on_schedule=on_schedule,
                          extra_loss=lambda: method_cfg.orth_reg_weight * orthogonality(peft_model),
                          after_step=lambda step: peft_model.base_model.update_and_allocate(step), report=report)
    return Adapted(peft_model, is_peft=True, hooks=hooks)
