# BitFit: the encoder's biases train (qkv, proj, MLP linears, LayerNorms, patch embedding, neck).
_base_ = ['../_base_/benchmarks/sbu_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='BitFit')))
