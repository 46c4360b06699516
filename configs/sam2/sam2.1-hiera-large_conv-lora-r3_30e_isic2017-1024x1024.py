_base_ = ['../_base_/benchmarks/isic2017_1024x1024.py', '../_base_/encoders/sam2.1-hiera-large.py']
model = dict(
    sam_checkpoint=_base_.sam2.checkpoint,
    backbone=dict(
        _base_.sam2.backbone, _delete_=True, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)
    ),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
find_unused_parameters = True  # unrouted experts get no gradient in a step
