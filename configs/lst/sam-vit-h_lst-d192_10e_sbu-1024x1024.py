# LST (Sung et al. 2022): a ViT-tiny-width side network (192 dims, 3 heads) fused at SAM's
# global-attention blocks; no gradient enters the encoder.
_base_ = ['../_base_/benchmarks/sbu_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='LST', side_dims=192, side_heads=3)))
