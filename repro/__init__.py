"""repro-lora: a reproduction harness for LoRA (Hu et al. 2021, arXiv 2106.09685).

The data path is: config -> task data (`repro.data`) -> model (`repro.models`) -> method (`repro.methods`)
-> train/evaluate (`repro.kinds` around the one loop `repro.loop`) -> result record (`repro.results`) -> tables.
"""

import logging

__version__ = "0.1.0"

# bitsandbytes (QLoRA's 4-bit kernels; peft imports it wherever it is installed) warns on import, on CPUs with
# AVX512_BF16, that it cannot fetch an optional inference kernel from the Hugging Face hub. The harness never uses that
# kernel (repro.methods.qlora.keep_training_layout), so the warning would only alarm, in every run of every method.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
