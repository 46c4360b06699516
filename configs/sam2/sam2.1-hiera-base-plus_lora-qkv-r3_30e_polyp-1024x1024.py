_base_ = ['../_base_/benchmarks/polyp_1024x1024.py', '../_base_/encoders/sam2.1-hiera-base-plus.py']
model = dict(
    sam_checkpoint=_base_.sam2.checkpoint,
    backbone=dict(
        _base_.sam2.backbone, _delete_=True, peft=dict(type='LoRA', rank=3, alpha=32, targets=('qkv',))
    ),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
