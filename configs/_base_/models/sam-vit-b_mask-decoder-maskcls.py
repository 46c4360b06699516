# SAM ViT-B image encoder (frozen) + SAM mask decoder in mask-classification mode
# (Mask2Former-style, the Conv-LoRA reference's multi-class head): num_queries mask
# tokens from SAM's token 0, a shared hypernetwork MLP, a class branch with a
# "no object" class, Hungarian-matched set loss. Set decode_head.num_classes to the
# dataset's number of classes (background included); the loss takes it from the head.
_base_ = ['./sam-vit-b_mask-decoder-binary.py']
model = dict(
    decode_head=dict(
        mode='mask_classification',
        num_classes=3,
        out_channels=None,
        threshold=None,
        num_queries=20,
        loss_decode=dict(_delete_=True, type='MaskClassificationLoss'),
    )
)
