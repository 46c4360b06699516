# SAM ViT-L image encoder (frozen) + SAM mask decoder in mask-classification mode (the
# Conv-LoRA reference's multi-class head): the ViT-B base with the ViT-L encoder, both
# parts loaded from the official checkpoint
# (python tools/download_sam_checkpoint.py vit_l --out-dir checkpoints/).
_base_ = ['./sam-vit-b_mask-decoder-maskcls.py']
model = dict(sam_checkpoint='checkpoints/sam_vit_l_0b3195.pth', backbone=dict(arch='vit_l'))
