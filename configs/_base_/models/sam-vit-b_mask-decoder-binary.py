# SAM ViT-B image encoder (frozen) + SAM mask decoder head, binary segmentation.
# Point model.sam_checkpoint at sam_vit_b_01ec64.pth (or a Hugging Face SamModel
# checkpoint) to start both parts from SAM's weights.
img_size = 1024
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],  # SAM's pixel statistics (RGB)
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=255,
    size=(img_size, img_size),
)
model = dict(
    type='SAMEncoderDecoder',
    data_preprocessor=data_preprocessor,
    sam_checkpoint=None,
    # No PEFT here: this base is decoder-only; configs add backbone.peft=dict(type=...).
    backbone=dict(type='SAMViT', arch='vit_b', img_size=img_size, frozen=True),
    decode_head=dict(
        type='SAMMaskDecoderHead',
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        # Sigmoid BCE on the single foreground logit. Do not add mmseg 1.2.2's DiceLoss
        # here: with one output channel it one-hot encodes channel 0 as `label == 0`,
        # i.e. it pulls the foreground probability towards the background mask.
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True, avg_non_ignore=True, loss_weight=1.0),
    ),
    train_cfg=dict(),
    test_cfg=dict(mode='whole'),
)
