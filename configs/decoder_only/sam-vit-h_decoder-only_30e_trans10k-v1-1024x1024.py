# Decoder-only baseline: SAM's image encoder stays frozen (no PEFT), only the mask decoder trains.
_base_ = ['../_base_/benchmarks/trans10k_v1_1024x1024.py']
