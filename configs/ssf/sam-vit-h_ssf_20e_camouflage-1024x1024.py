# SSF (Lian et al. 2022): a scale and shift after every linear and LayerNorm of the blocks.
_base_ = ['../_base_/benchmarks/camouflage_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='SSF')))
