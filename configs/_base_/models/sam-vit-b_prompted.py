# SAM ViT-B image encoder (frozen) + SAM's whole promptable decoder (prompt encoder, mask
# decoder with its multimask tokens and IoU head), trained and evaluated with prompts on the
# instances of each image: the binary base (its data preprocessor: SAM's pixel statistics, the
# resized image padded at the bottom and right) with the segmentor and head swapped. Point
# model.sam_checkpoint at sam_vit_b_01ec64.pth to start from SAM;
# tools/model_converters/export_sam.py writes the fine-tuned model back in SAM's own format.
_base_ = ['./sam-vit-b_mask-decoder-binary.py']
model = dict(
    type='SAMPromptedEncoderDecoder',
    # No PEFT here: decoder-only; configs add backbone.peft=dict(type=...).
    decode_head=dict(
        _delete_=True,
        type='SAMPromptedHead',
        num_classes=2,
        image_size=_base_.img_size,
        # SAM's recipe: the first prompt a box or a point (50 / 50); COBOT and MedSAM: boxes only
        train_prompting=dict(box_prob=0.5, correction_rounds=0, mask_only_rounds=0),
        # box IoU / Dice, and the click curve with NoC@85 / NoC@90 over 20 clicks
        test_prompting=dict(box=True, clicks=20),
        loss_decode=dict(type='PromptedMaskLoss', focal=20.0, dice=1.0, iou=1.0),  # SAM's 20 : 1
        # each round back-propagated as soon as its loss is known, 4 instances per decoder call:
        # SAM's 11 rounds at the memory of one box round, the same gradients (docs/prompted.md, Memory)
        round_memory='backward',
        instance_chunk=4,
    ),
)
