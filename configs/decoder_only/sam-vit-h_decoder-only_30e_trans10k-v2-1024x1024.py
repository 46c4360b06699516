# Decoder-only baseline: SAM's image encoder stays frozen (no PEFT), only the mask decoder trains.
_base_ = ['../_base_/benchmarks/trans10k_v2_1024x1024.py']
