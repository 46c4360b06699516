# `make demo DEMO_ARGS=--sam2` without a checkpoint: a small SAM 2 Hiera encoder (random weights,
# frozen; 4 stages of 32 to 256 channels) + LoRA on q and v + SAM 2's mask decoder head, trained
# on the synthetic demo data at 128x128 on CPU: the small SAM demo with the SAM 2 family swapped in.
_base_ = [
    './sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py',
    '../_base_/encoders/sam2.1-hiera-mini_demo.py',
]
model = dict(
    backbone=dict(
        _base_.sam2.backbone, _delete_=True, peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))
    ),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
