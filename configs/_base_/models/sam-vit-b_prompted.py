# SAM ViT-B image encoder (frozen) + SAM's whole promptable decoder (prompt encoder, mask
# decoder with its multimask tokens and IoU head), trained and evaluated with prompts on the
# instances of each image. Point model.sam_checkpoint at sam_vit_b_01ec64.pth to start from SAM;
# tools/model_converters/export_sam.py writes the fine-tuned model back in SAM's own format.
img_size = 1024
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # SAM's pixel statistics (RGB)
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(img_size, img_size),  # SAM pads the resized image at the bottom and right
)
model = dict(
    type='SAMPromptedEncoderDecoder',
    data_preprocessor=data_preprocessor,
    sam_checkpoint=None,
    # No PEFT here: decoder-only; configs add backbone.peft=dict(type=...).
    backbone=dict(type='SAMViT', arch='vit_b', img_size=img_size, frozen=True),
    decode_head=dict(
        type='SAMPromptedHead',
        num_classes=2,
        image_size=img_size,
        # SAM's recipe: the first prompt a box or a point (50 / 50); COBOT and MedSAM: boxes only
        train_prompting=dict(box_prob=0.5, correction_rounds=0, mask_only_rounds=0),
        # box IoU / Dice, and the click curve with NoC@85 / NoC@90 over 20 clicks
        test_prompting=dict(box=True, clicks=20),
        loss_decode=dict(type='PromptedMaskLoss', focal=20.0, dice=1.0, iou=1.0),  # SAM's 20 : 1
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
