"""Efficiency benchmarks: inference latency (Table 1) and training cost (Section 4.2 claims)."""

import torch


def hardware_label(device: torch.device) -> str:
    """What the numbers were measured on, for table captions."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"CPU, torch threads: {torch.get_num_threads()}"

