# The 24-class demo comparison with mmseg's UPerHead (+ FCNHead auxiliary) on the small encoder's
# four blocks (SAMViT with_neck=False, Feature2Pyramid: strides 2, 4, 8, 16 with patch 8), at the
# schedule of sam-vit-small_lora-qv-r4_300_demo-multiclass-many-128x128.py.
_base_ = ['./sam-vit-small_lora-qv-r4_300_demo-multiclass-many-128x128.py']
norm_cfg = dict(type='SyncBN', requires_grad=True)  # plain batch norm on one device
model = dict(
    backbone=dict(out_indices=(0, 1, 2, 3), with_neck=False),
    neck=dict(type='Feature2Pyramid', embed_dim=192, rescales=[4, 2, 1, 0.5], norm_cfg=norm_cfg),
    decode_head=dict(
        _delete_=True,
        type='UPerHead',
        in_channels=[192] * 4,
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=64,
        dropout_ratio=0.1,
        num_classes=25,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    ),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=192,
        in_index=2,
        channels=32,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=25,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4),
    ),
)
