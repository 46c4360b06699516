# The small demo model on the 8-hue-class demo data with the mask-classification head
# (10 queries, Hungarian-matched set loss), at the same schedule as its one-token-per-class
# baseline sam-vit-small_lora-qv-r4_2k_demo-multiclass-hue-128x128.py.
_base_ = ['./sam-vit-small_lora-qv-r4_2k_demo-multiclass-hue-128x128.py']
model = dict(
    decode_head=dict(
        mode='mask_classification',
        num_queries=10,
        loss_decode=dict(_delete_=True, type='MaskClassificationLoss'),
    )
)
