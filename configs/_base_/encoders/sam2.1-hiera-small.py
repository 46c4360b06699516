# SAM 2.1 Hiera-S image encoder (SAM2Hiera, frozen) and its checkpoint, as variables that a
# config swaps into a SAM model: ../models/sam2.1-hiera-small_mask-decoder-binary.py, configs/sam2/.
# Official weights: https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_small.pt
sam2 = dict(
    checkpoint='checkpoints/sam2.1_hiera_small.pt',
    backbone=dict(type='SAM2Hiera', arch='small', frozen=True),
)
