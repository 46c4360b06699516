# `make demo` without a SAM checkpoint: a small SAM-architecture encoder (random
# weights, frozen) + LoRA on q and v + the SAM mask decoder head, trained on the
# synthetic demo data at 128x128 on CPU. This shows the pipeline learning; it is not
# SAM's pretrained quality (see the ViT-B demo config for that).
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-binary.py',
    '../_base_/datasets/demo_binary.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_2k.py',
]
img_size = 128
small_arch = dict(
    _delete_=True,  # replaces the base's arch='vit_b'
    embed_dims=192,
    num_layers=4,
    num_heads=4,
    global_attn_indexes=(1, 3),
    window_size=8,
    patch_size=8,
    out_channels=64,
)
model = dict(
    data_preprocessor=dict(size=(img_size, img_size)),
    backbone=dict(
        arch=small_arch, img_size=img_size, peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'))
    ),
    decode_head=dict(embed_dims=64, decoder_num_heads=4, decoder_mlp_dims=256),
)
optim_wrapper = dict(optimizer=dict(lr=1e-3))
# 1000 iterations (the demo must finish in minutes on a CPU), linear decay to 0.
train_cfg = dict(max_iters=1000, val_interval=500)
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=1000, by_epoch=False)]
