# COBOT (Peng et al. 2024) on its reference AdaptFormer host: bottleneck 16, scale 1.0, dropout
# 0.1, the branch reading norm2(x) (the reference's Adapter wraps the MLP); C, S and the
# quaternion heads at 10x the learning rate, as the reference.
_base_ = ['../_base_/benchmarks/sbu_1024x1024.py']
model = dict(
    backbone=dict(
        peft=dict(
            type='COBOT',
            host=dict(type='AdaptFormer', bottleneck=16, scale=1.0, dropout=0.1, branch_input='mlp'),
        )
    )
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'cobot': dict(lr_mult=10.0)}))
