# SAM ViT-B image encoder (frozen) as a plain backbone for mmseg's own heads, the ViTDet-style
# baseline: the outputs of its four global-attention blocks (SAM's neck is not run), made a
# 4-level pyramid at strides 4, 8, 16 and 32 by mmseg's Feature2Pyramid, UPerHead + an FCNHead
# auxiliary on the stride-16 level. The heads are mmseg's upernet_mae base, inherited: only
# the backbone, the channels and the segmentor differ. model.sam_checkpoint loads the encoder
# only (UPerHead takes no SAM weights); configs add backbone.peft=dict(type=...).
_base_ = ['mmseg::_base_/models/upernet_mae.py']
img_size = 1024
embed_dims = 768
model = dict(
    type='SAMEncoderDecoder',  # sam_checkpoint, PEFT auxiliary losses, padding to the patch size
    data_preprocessor=dict(size=(img_size, img_size)),  # mean / std are SAM's already
    sam_checkpoint=None,
    backbone=dict(
        _delete_=True,
        type='SAMViT',
        arch='vit_b',
        img_size=img_size,
        frozen=True,
        out_indices=(2, 5, 8, 11),  # the global-attention blocks
        with_neck=False,
    ),
    neck=dict(embed_dim=embed_dims),
    decode_head=dict(in_channels=[embed_dims] * 4),
    auxiliary_head=dict(in_channels=embed_dims),
)
