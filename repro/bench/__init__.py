"""Efficiency benchmarks: inference latency (Table 1) and training cost (Section 4.2 claims)."""

from pathlib import Path

import pandas as pd
import torch


def hardware_label(device: torch.device) -> str:
    """What the numbers were measured on, for table captions."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    from repro.provenance import cpu_info

    cpu = cpu_info()
    bf16 = f", {'/'.join(cpu['cpu_bf16'])}" if cpu["cpu_bf16"] else ""
    return f"{cpu['cpu_model']} ({cpu['cpu_capability']}{bf16}), torch threads: {torch.get_num_threads()}"



def write_and_show(table: pd.DataFrame, stem: Path, caption: str, float_fmt: str) -> list[Path]:
    """What every benchmark ends with: `<stem>.{csv,md}` written, and the caption and table printed."""
    from repro.analysis.reference import write_table

    written = write_table(table, stem, caption, float_fmt)
    print(caption)
    print(table.to_string(index=False))
    return written
