"""Parameter counts as the paper reports them: the method's trainable parameters, the task head apart."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from torch import nn

from repro.methods.base import is_head


@dataclass(frozen=True)
class ParamCounts:
    trainable: int  # the method's own trainable parameters (the paper's |Theta|), head excluded
    head: int  # task head parameters, trainable under every method
    total: int  # every parameter of the adapted model (frozen copies kept by peft not double-counted)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def count_parameters(model: nn.Module, head: list[str]) -> ParamCounts:
    trainable = head_count = total = 0
    for name, p in model.named_parameters():
        if ".original_module." in name:  # peft's frozen copy of a head module it trains
            continue
        total += weights_in(p)
        if is_head(name, head):
            head_count += p.numel()
        elif p.requires_grad:
            trainable += p.numel()
    return ParamCounts(trainable=trainable, head=head_count, total=total)


def quantisable_weights(model: nn.Module, head: list[str]) -> int:
    """The weights QLoRA's 4-bit loading quantises: those of the frozen Linear layers, except the task head (kept in
    full precision, repro.methods.qlora) and the output layer (transformers keeps it); embeddings and norms are not
    Linear and stay in full precision too."""
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return sum(weights_in(module.weight) for name, module in model.named_modules()
               if isinstance(module, nn.Linear) and module is not output and not module.weight.requires_grad
               and ".original_module" not in f".{name}" and not is_head(name, head))


def weights_in(p: nn.Parameter) -> int:
    """The weights a parameter holds: a 4-bit one (QLoRA's bitsandbytes Params4bit) packs two per byte, so its
    tensor has half as many elements as the layer has weights; its quantisation state keeps the layer's shape."""
    state = getattr(p, "quant_state", None)
    return state.shape.numel() if state is not None else p.numel()
