# sam-vit-b-maskcls_conv-lora-r3_80k_isaid-896x896.py with COBOT on its reference LoRA host (rank 4
# on q and v, xavier init; C, S and the quaternion heads at 100x the learning rate) instead of Conv-
# LoRA.
_base_ = ['./sam-vit-b-maskcls_conv-lora-r3_80k_isaid-896x896.py']
model = dict(
    backbone=dict(
        peft=dict(
            _delete_=True,
            type='COBOT',
            host=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'), init='xavier'),
        )
    )
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'cobot': dict(lr_mult=100.0)}))
find_unused_parameters = False  # every COBOT parameter gets a gradient
