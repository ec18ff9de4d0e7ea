"""What every method returns, and the freezing/saving helpers they share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file
from torch import nn

TRAINABLE_FILE = "trainable.safetensors"


def target_modules(method_cfg: DictConfig, model_cfg: DictConfig) -> list[str]:
    """Module names of the paper's matrices (q, k, v, o) the method adapts."""
    return [model_cfg.matrices[t] for t in method_cfg.targets]


def saved_head(model_cfg: DictConfig) -> list[str]:
    """The head trains under every method; peft keeps a trainable copy of these modules."""
    return [h.split(".")[-1] for h in model_cfg.head]


def adamw(groups: list[dict], lr: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch has the kernel (cpu, cuda): the same update in one pass over all tensors instead of
    a dozen per tensor. On one cpu thread that is the difference between 300 ms and 40 ms per step for full
    fine-tuning of MiniLM-L6 at 16 x 16 tokens, a step of 720 ms becoming 400 ms
    (`python -m repro.bench.train --methods full_ft --batch 16 --seq 16`)."""
    params = [p for group in groups for p in group["params"]]
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


@dataclass
class TrainingHooks:
    """What a method needs from a training loop beyond forward/backward/step; the defaults need nothing.
    The training loop (repro/loop.py) calls every hook for every task kind, so a method works on every task."""

    # the optimizer over `repro.loop.optimizer_groups` (QLoRA: a paged AdamW)
    make_optimizer: Callable[[list[dict], float], torch.optim.Optimizer] = adamw
    # told the run's total optimizer steps once known (AdaLoRA derives its rank schedule from it)
    on_schedule: Callable[[int], None] = lambda total_steps: None
    # added to each training loss (AdaLoRA's orthogonality regulariser)
    extra_loss: Callable[[], torch.Tensor | float] = lambda: 0.0
    # after each optimizer step, before the gradients are cleared (AdaLoRA's rank allocation reads them)
    after_step: Callable[[int], None] = lambda step: None
    # method state for the result record after training (AdaLoRA: the final rank of each matrix)
    report: Callable[[], dict[str, Any]] = dict


@dataclass
class Adapted:
    """A model ready to train. `model` is what the trainer calls (`model(**batch)`); `reserved_tokens` is how
    many positions the method adds to each input (prefix/infix), which the tokenizer leaves free."""

    model: nn.Module
    is_peft: bool = False
    reserved_tokens: int = 0
    head: tuple[str, ...] = ()  # module names of the task head (model config `head`)
    hooks: TrainingHooks = field(default_factory=TrainingHooks)

    def save(self, directory: Path) -> None:
        """peft's `save_pretrained` format for peft methods; otherwise the trainable tensors as safetensors."""
        directory.mkdir(parents=True, exist_ok=True)
        if self.is_peft:
            self.model.save_pretrained(directory)
        else:
            state = {n: p.detach().cpu().contiguous() for n, p in self.model.named_parameters() if p.requires_grad}
            save_file(state, directory / TRAINABLE_FILE)

    def load(self, directory: Path, include_head: bool = True) -> None:
        """Load what `save` wrote into a freshly adapted model built from the same config. Without the head,
        the method's weights of another task's run (the paper starts MRPC/RTE/STS-B from MNLI's LoRA)."""
        if self.is_peft:
            from peft import PeftConfig, get_peft_model_state_dict, load_peft_weights, set_peft_model_state_dict

            saved = PeftConfig.from_pretrained(str(directory))
            if saved.peft_type == "ADALORA" and saved.rank_pattern:  # AdaLoRA saves its pruned ranks: resize to them
                self.model.peft_config[self.model.active_adapter].rank_pattern = saved.rank_pattern
            state = load_peft_weights(str(directory))
            if not include_head:  # peft wants every saved key: keep this model's own head tensors
                own = get_peft_model_state_dict(self.model)
                state = {k: own[k] if is_head(k, list(self.head)) else v for k, v in state.items()}
            result = set_peft_model_state_dict(self.model, state)
            # prompt learning's `prompt_embeddings` load into the prompt encoder, which peft still reports
            unexpected = [k for k in result.unexpected_keys if not (saved.is_prompt_learning and
                                                                    k == "prompt_embeddings")]
            if unexpected:
                raise RuntimeError(f"unexpected keys in {directory}: {unexpected[:5]}")
        else:
            state = load_file(directory / TRAINABLE_FILE)
            if not include_head:
                state = {k: v for k, v in state.items() if not is_head(k, list(self.head))}
            missing, unexpected = self.model.load_state_dict(state, strict=False)
            if unexpected:
                raise RuntimeError(f"unexpected keys in {directory}: {unexpected[:5]}")
            trainable = {n for n, p in self.model.named_parameters()
                         if p.requires_grad and (include_head or not is_head(n, list(self.head)))}
            if trainable - set(state):
                raise RuntimeError(f"{directory} lacks trainable tensors: {sorted(trainable - set(state))[:5]}")


def is_head(name: str, head: list[str]) -> bool:
    """Whether a parameter name belongs to the task head, also inside peft/prefix wrappers."""
    dotted = f".{name}."
    return any(f".{prefix}." in dotted for prefix in head)


def train_only(model: nn.Module, keep: Callable[[str, nn.Parameter], bool], head: list[str]) -> None:
    """Freeze everything except parameters selected by `keep` and the task head."""
    for name, param in model.named_parameters():
        param.requires_grad_(keep(name, param) or is_head(name, head))


def make_activation(name: str) -> nn.Module:
    activations = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
    return activations[name]()
