# `make demo DEMO_ARGS=--sam2` without a checkpoint: a small SAM 2 Hiera encoder (random weights,
# frozen; 4 stages of 32 to 256 channels) + LoRA on q and v + SAM 2's mask decoder head, trained
# on the synthetic demo data at 128x128 on CPU: the small SAM demo with the SAM 2 family swapped in.
_base_ = ['./sam-vit-small_lora-qv-r4_1k_demo-binary-128x128.py']
mini_hiera = dict(
    embed_dims=32,
    num_heads=1,
    stages=(1, 2, 2, 1),
    global_att_blocks=(4,),
    window_pos_embed_bkg_spatial_size=(4, 4),
    window_spec=(8, 4, 4, 2),
    out_channels=64,
)
model = dict(
    backbone=dict(
        _delete_=True,
        type='SAM2Hiera',
        arch=mini_hiera,
        frozen=True,
        peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v')),
    ),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
