"""repro-lora: a reproduction harness for LoRA (Hu et al. 2021, arXiv 2106.09685).

The data path is: config -> task data (`repro.data`) -> model (`repro.models`) -> method (`repro.methods`)
-> train/evaluate (`repro.kinds` around the one loop `repro.loop`) -> result record (`repro.results`) -> tables.
"""

__version__ = "0.1.0"
