# Adapter (Houlsby et al. 2019): serial bottleneck adapters (width 64, GELU) after the
# attention and the MLP of every block.
_base_ = ['../_base_/benchmarks/leaf_disease_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='Adapter', bottleneck=64, targets=('attn', 'mlp'))))
