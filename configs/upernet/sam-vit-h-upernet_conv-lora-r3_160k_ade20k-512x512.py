# sam-vit-b-upernet_conv-lora-r3_160k_ade20k-512x512.py with SAM ViT-H: its four global-attention
# blocks and its width, as configs/_base_/models/sam-vit-h_upernet.py
# (python tools/download_sam_checkpoint.py vit_h --out-dir checkpoints/).
_base_ = ['./sam-vit-b-upernet_conv-lora-r3_160k_ade20k-512x512.py']
model = dict(
    sam_checkpoint='checkpoints/sam_vit_h_4b8939.pth',
    backbone=dict(arch='vit_h', out_indices=(7, 15, 23, 31)),
    neck=dict(embed_dim=1280),
    decode_head=dict(in_channels=[1280] * 4),
    auxiliary_head=dict(in_channels=1280),
)
