# SAM ViT-B image encoder (frozen) + SAM mask decoder head with one mask token per
# class (softmax over classes). Set decode_head.num_classes / out_channels to the
# dataset's number of classes.
_base_ = ['./sam-vit-b_mask-decoder-binary.py']
model = dict(
    decode_head=dict(
        num_classes=3,
        out_channels=3,
        threshold=None,
        loss_decode=[dict(type='CrossEntropyLoss', use_sigmoid=False, avg_non_ignore=True, loss_weight=1.0)],
    )
)
