"""Section 7 analyses of learned LoRA weights: subspace similarity (Figures 3-4) and dW vs W (Table 7)."""
