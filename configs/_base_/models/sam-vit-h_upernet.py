# SAM ViT-H image encoder (frozen) + Feature2Pyramid + UPerHead + FCNHead auxiliary: the ViT-B
# base (sam-vit-b_upernet.py) with the ViT-H encoder, its four global-attention blocks and
# its width (python tools/download_sam_checkpoint.py vit_h --out-dir checkpoints/).
_base_ = ['./sam-vit-b_upernet.py']
embed_dims = 1280
model = dict(
    sam_checkpoint='checkpoints/sam_vit_h_4b8939.pth',
    backbone=dict(arch='vit_h', out_indices=(7, 15, 23, 31)),
    neck=dict(embed_dim=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims),
)
