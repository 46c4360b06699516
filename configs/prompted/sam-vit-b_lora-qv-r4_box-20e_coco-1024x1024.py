# COBOT's box-prompted protocol (see sam-vit-b_decoder-only_box-20e_coco-1024x1024.py) with
# COBOT's LoRA host: rank 4 on q and v, xavier init, no scaling.
_base_ = ['./sam-vit-b_decoder-only_box-20e_coco-1024x1024.py']
model = dict(backbone=dict(peft=dict(type='LoRA', rank=4, alpha=4, targets=('q', 'v'), init='xavier')))
