# SAM 2.1 Hiera-B+ image encoder (frozen) + SAM 2's mask decoder head (its stride-4 and -8 FPN
# levels included), binary segmentation: the SAM ViT-B binary base with the encoder and head swapped.
# Inputs must be multiples of 32 (the data preprocessor's size is 1024).
_base_ = ['./sam-vit-b_mask-decoder-binary.py', '../encoders/sam2.1-hiera-base-plus.py']
model = dict(
    sam_checkpoint=_base_.sam2.checkpoint,
    backbone=dict(_base_.sam2.backbone, _delete_=True),
    decode_head=dict(type='SAM2MaskDecoderHead'),
)
