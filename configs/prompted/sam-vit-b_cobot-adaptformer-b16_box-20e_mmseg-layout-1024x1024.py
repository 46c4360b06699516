# COBOT's box-prompted protocol (see sam-vit-b_decoder-only_box-20e_mmseg-layout-1024x1024.py) with
# COBOT on its AdaptFormer host (bottleneck 16, scale 1, dropout 0.1, the branch reading norm2(x)).
_base_ = ['./sam-vit-b_decoder-only_box-20e_mmseg-layout-1024x1024.py']
model = dict(
    backbone=dict(
        peft=dict(
            type='COBOT',
            host=dict(type='AdaptFormer', bottleneck=16, scale=1.0, dropout=0.1, branch_input='mlp'),
        )
    )
)
