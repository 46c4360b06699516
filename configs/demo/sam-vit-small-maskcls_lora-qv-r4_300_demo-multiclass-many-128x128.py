# The 24-class demo comparison with the mask-classification head (20 queries, Hungarian-matched
# set loss), at the schedule of sam-vit-small_lora-qv-r4_300_demo-multiclass-many-128x128.py.
_base_ = ['./sam-vit-small_lora-qv-r4_300_demo-multiclass-many-128x128.py']
model = dict(
    decode_head=dict(
        mode='mask_classification',
        out_channels=None,
        num_queries=20,
        loss_decode=dict(_delete_=True, type='MaskClassificationLoss'),
    )
)
