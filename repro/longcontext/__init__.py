"""Long-context extension (LongLoRA, Chen et al. 2023, arXiv 2309.12307): shifted sparse attention for training
(attention.py), RoPE position interpolation (positions.py), passkey retrieval (passkey.py) and long documents cut
into fixed-length chunks (data.py). The task kind that uses them is repro/kinds/long_context.py; the method
(LoRA on q, k, v, o with trainable embeddings and norms) is repro/methods/longlora.py."""
