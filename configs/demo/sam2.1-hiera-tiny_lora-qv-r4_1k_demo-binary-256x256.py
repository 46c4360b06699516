# `SAM_CHECKPOINT=/path/sam2.1_hiera_tiny.pt make demo DEMO_ARGS=--sam2`: SAM 2.1 Hiera-T (frozen)
# + LoRA on q and v + SAM 2's mask decoder, fine-tuned on the synthetic demo data at 256x256:
# the ViT-B demo with the SAM 2.1 encoder and head swapped in.
_base_ = ['./sam-vit-b_lora-qv-r4_1k_demo-binary-256x256.py', '../_base_/encoders/sam2.1-hiera-tiny.py']
model = dict(
    sam_checkpoint=_base_.sam2.checkpoint,
    backbone=dict(
        _base_.sam2.backbone, _delete_=True, peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))
    ),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
