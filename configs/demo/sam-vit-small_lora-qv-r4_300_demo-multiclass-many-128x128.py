# The small demo model on the 24-class demo data (25 with background; texture x hue families)
# with one mask token per class: the many-class comparison of docs/multiclass.md, against
# mask classification and UPerHead at the same 300 iterations. Data (2000 train / 100 val):
#   python tools/dataset_converters/generate_demo_data.py data/demo_multiclass_many \
#       --mode multiclass_many --num-train 2000 --num-val 100
_base_ = ['./sam-vit-small_lora-qv-r4_1k_demo-multiclass-128x128.py']
data_root = 'data/demo_multiclass_many'
_hues = range(0, 360, 45)
metainfo = dict(
    classes=('background', *(f'{t}-hue{h}' for t in ('stripes', 'checker', 'dots') for h in _hues)),
    # the generator's: each hue at value 1.0 (stripes), 0.75 (checker), 0.5 (dots)
    palette=[
        [0, 0, 0],
        [255, 0, 0],
        [255, 191, 0],
        [127, 255, 0],
        [0, 255, 64],
        [0, 255, 255],
        [0, 64, 255],
        [128, 0, 255],
        [255, 0, 191],
        [191, 0, 0],
        [191, 143, 0],
        [96, 191, 0],
        [0, 191, 48],
        [0, 191, 191],
        [0, 48, 191],
        [96, 0, 191],
        [191, 0, 143],
        [128, 0, 0],
        [128, 96, 0],
        [64, 128, 0],
        [0, 128, 32],
        [0, 127, 128],
        [0, 32, 128],
        [64, 0, 128],
        [128, 0, 96],
    ],
)
train_dataloader = val_dataloader = test_dataloader = dict(
    dataset=dict(data_root=data_root, metainfo=metainfo)
)
model = dict(decode_head=dict(num_classes=25, out_channels=25))
train_cfg = dict(max_iters=300, val_interval=300)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=300, by_epoch=False)]
default_hooks = dict(checkpoint=dict(interval=300))
