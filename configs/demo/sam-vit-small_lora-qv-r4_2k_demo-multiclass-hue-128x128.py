# The small demo model on the 8-hue-class demo data (9 classes with background) with
# one mask token per class: the baseline of
# sam-vit-small-maskcls_lora-qv-r4_2k_demo-multiclass-hue-128x128.py.
# Data (2000 train / 200 val images; with the generator's default 200 training images
# both heads overfit):
#   python tools/dataset_converters/generate_demo_data.py data/demo_multiclass_hue \
#       --mode multiclass_hue --num-train 2000 --num-val 200
# 2000 iterations (twice the texture toy's): the set loss of mask classification
# converges more slowly than per-pixel cross-entropy (docs/multiclass.md).
_base_ = ['./sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py']
data_root = 'data/demo_multiclass_hue'
metainfo = dict(
    classes=('background', 'hue0', 'hue45', 'hue90', 'hue135', 'hue180', 'hue225', 'hue270', 'hue315'),
    palette=[
        [0, 0, 0],
        [255, 0, 0],
        [255, 191, 0],
        [128, 255, 0],
        [0, 255, 64],
        [0, 255, 255],
        [0, 64, 255],
        [128, 0, 255],
        [255, 0, 191],
    ],
)
train_dataloader = val_dataloader = test_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo)
)
model = dict(decode_head=dict(num_classes=9, out_channels=9))
train_cfg = dict(max_iters=2000, val_interval=500)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=2000, by_epoch=False)]
