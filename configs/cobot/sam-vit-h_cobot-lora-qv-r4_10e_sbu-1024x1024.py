# COBOT (Peng et al. 2024) on its reference LoRA host: rank 4 on q and v, xavier init, no
# scaling; C, S and the quaternion heads at 100x the learning rate, as the reference.
_base_ = ['../_base_/benchmarks/sbu_1024x1024.py']
model = dict(
    backbone=dict(
        peft=dict(type='COBOT', host=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'), init='xavier'))
    )
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'cobot': dict(lr_mult=100.0)}))
