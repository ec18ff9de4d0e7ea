"""Efficiency benchmarks: inference latency (Table 1) and training cost (Section 4.2 claims)."""
