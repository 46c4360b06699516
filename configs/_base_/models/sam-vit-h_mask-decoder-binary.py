# SAM ViT-H image encoder (frozen) + SAM mask decoder head, binary segmentation: the
# ViT-B base with the ViT-H encoder, both parts loaded from the official checkpoint
# (python tools/download_sam_checkpoint.py vit_h --out-dir checkpoints/).
_base_ = ['./sam-vit-b_mask-decoder-binary.py']
model = dict(sam_checkpoint='checkpoints/sam_vit_h_4b8939.pth', backbone=dict(arch='vit_h'))
