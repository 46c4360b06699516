# Decoder-only baseline: SAM's image encoder stays frozen (no PEFT), only the mask decoder trains.
_base_ = ['../_base_/benchmarks/isic2017_1024x1024.py']
