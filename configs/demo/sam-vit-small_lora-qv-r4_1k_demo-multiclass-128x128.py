# The small demo model on the multi-class demo data with one mask token per class
# (softmax cross-entropy): the baseline of the mask-classification config.
_base_ = ['./sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py']
data_root = 'data/demo_multiclass'
metainfo = dict(
    classes=('background', 'stripes', 'checker', 'dots'),
    palette=[[0, 0, 0], [255, 64, 64], [64, 200, 64], [64, 96, 255]],
)
train_dataloader = val_dataloader = test_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo)
)
model = dict(
    decode_head=dict(
        num_classes=4,
        out_channels=4,
        threshold=None,
        loss_decode=dict(use_sigmoid=False),
    )
)
