# SAM 2.1 Hiera-B+ image encoder (frozen) + SAM 2.1's whole promptable decoder (prompt encoder,
# mask decoder with its multimask tokens, IoU and object-score heads, and no_mem_embed), trained
# and evaluated with prompts on the instances of each image: the SAM ViT-B prompted base with the
# encoder and head swapped, and SAM 2.1's fine-tuning loss (sam2.1_training config: mask focal 20,
# Dice 1, L1 IoU loss on every mask 1, object score 1). SAM 2 resizes images to the square
# (no padding): pipelines Resize(scale=(1024, 1024), keep_ratio=False).
# tools/model_converters/export_sam.py writes the fine-tuned model back in SAM 2.1's format.
_base_ = ['./sam-vit-b_prompted.py', '../encoders/sam2.1-hiera-base-plus.py']
model = dict(
    sam_checkpoint=_base_.sam2.checkpoint,
    backbone=dict(_base_.sam2.backbone, _delete_=True),
    decode_head=dict(
        type='SAM2PromptedHead',
        loss_decode=dict(type='PromptedMaskLoss', focal=20.0, dice=1.0, iou=1.0, iou_loss='l1'),
        object_loss_weight=1.0,
    ),
)
