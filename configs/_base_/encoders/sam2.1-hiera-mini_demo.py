# The SAM 2 demos' small Hiera encoder (SAM2Hiera, frozen): 4 stages of 32 to 256 channels, 6
# blocks, random weights (no checkpoint), which trains on a CPU in minutes. The same variables as
# the official sizes' bases beside it, for configs/demo/sam2.1-hiera-mini_*.py.
mini_hiera = dict(
    embed_dims=32,
    num_heads=1,
    stages=(1, 2, 2, 1),
    global_att_blocks=(4,),
    window_pos_embed_bkg_spatial_size=(4, 4),
    window_spec=(8, 4, 4, 2),
    out_channels=64,
)
sam2 = dict(checkpoint=None, backbone=dict(type='SAM2Hiera', arch=mini_hiera, frozen=True))
