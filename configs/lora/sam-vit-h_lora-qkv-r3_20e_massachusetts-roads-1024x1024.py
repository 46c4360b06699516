# LoRA on every block's fused qkv with the Conv-LoRA reference's rank and scaling (r 3, alpha 32):
# the baseline Conv-LoRA adds its experts to.
_base_ = ['../_base_/benchmarks/massachusetts_roads_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='LoRA', rank=3, alpha=32, targets=('qkv',))))
