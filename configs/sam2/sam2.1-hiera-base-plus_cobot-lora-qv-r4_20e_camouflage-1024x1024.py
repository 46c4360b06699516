_base_ = ['../_base_/benchmarks/camouflage_1024x1024.py', '../_base_/encoders/sam2.1-hiera-base-plus.py']
model = dict(
    sam_checkpoint=_base_.sam2.checkpoint,
    backbone=dict(
        _base_.sam2.backbone,
        _delete_=True,
        peft=dict(type='COBOT', host=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'), init='xavier')),
    ),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
optim_wrapper = dict(paramwise_cfg=dict(custom_keys={'cobot': dict(lr_mult=100.0)}))
