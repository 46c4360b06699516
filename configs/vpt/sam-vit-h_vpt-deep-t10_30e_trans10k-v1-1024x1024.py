# VPT-deep (Jia et al. 2022): 10 prompt tokens as extra keys and values in every block.
_base_ = ['../_base_/benchmarks/trans10k_v1_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='VPT', num_tokens=10, mode='deep')))
