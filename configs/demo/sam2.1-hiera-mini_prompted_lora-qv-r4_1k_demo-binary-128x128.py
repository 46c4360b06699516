# `make demo DEMO_ARGS=--prompted` with the SAM 2 family: the small SAM 2 Hiera encoder of the SAM 2
# demo (random weights, frozen; 4 stages of 32 to 256 channels) + LoRA on q and v, with SAM 2.1's
# whole promptable decoder (object-score head and no_mem_embed included), trained with prompts on
# the instances of the synthetic demo data at 128x128 on a CPU: the small prompted SAM demo (same
# prompts, rounds and evaluation) with the encoder and head swapped and SAM 2.1's losses
# (focal + Dice 20 : 1, L1 IoU, object score).
_base_ = [
    './sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py',
    '../_base_/encoders/sam2.1-hiera-mini_demo.py',
]
model = dict(
    backbone=dict(
        _base_.sam2.backbone, _delete_=True, peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))
    ),
    decode_head=dict(
        type='SAM2PromptedHead',
        patch_size=16,  # SAM 2 decodes the stride-16 level
        loss_decode=dict(type='PromptedMaskLoss', focal=20.0, dice=1.0, iou=1.0, iou_loss='l1'),
        object_loss_weight=1.0,
    ),
)
