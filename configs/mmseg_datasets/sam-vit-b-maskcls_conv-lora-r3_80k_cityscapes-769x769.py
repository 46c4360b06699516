# SAM ViT-B + Conv-LoRA (the reference preset: r 3, alpha 32, 8 experts) + mask classification (100
# queries, as Mask2Former on ADE20K and Cityscapes) on mmseg's cityscapes_769x769.py base:
# Cityscapes (19 classes), mmseg's 769x769 crops padded to 784x784 (a multiple of the patch size
# 16): training crops by the data preprocessor, test crops by SAMEncoderDecoder. Sliding-window test
# at the training crop, stride 2/3 of it. Schedule: configs/mmseg_datasets/README.md.
_base_ = [
    '../_base_/models/sam-vit-b_mask-decoder-maskcls.py',
    'mmseg::_base_/datasets/cityscapes_769x769.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adamw-linear_80k.py',
]
crop_size = (769, 769)  # the dataset base's
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    data_preprocessor=dict(size=(784, 784)),
    backbone=dict(img_size=784, peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)),
    decode_head=dict(num_classes=19, num_queries=100),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(513, 513)),
)
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
