# COBOT on a Conv-LoRA host (no published code does this pairing): the reference preset with
# rank 4, which the quaternion heads need; C, S and the heads at 100x the learning rate.
_base_ = ['../_base_/benchmarks/isic2017_1024x1024.py']
model = dict(
    backbone=dict(peft=dict(type='COBOT', host=dict(type='ConvLoRA', rank=4, alpha=32, num_experts=8)))
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'cobot': dict(lr_mult=100.0)}))
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
