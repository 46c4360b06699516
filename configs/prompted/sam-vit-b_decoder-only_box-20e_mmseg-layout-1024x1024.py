# COBOT's box-prompted protocol (Peng et al., CVPR 2024, Table 4; SAM-COBOT remote/train_SAM_box.py)
# on any semantic dataset in mmseg's layout, its instances the connected components of each class (configs/_base_/datasets/prompted_mmseg-layout_1024x1024.py):
# SAM ViT-B at 1024, per instance a box from its mask with U{0..49} px added to each coordinate in
# training (the tight box in testing, as the released script), the single-mask output, BCE + Dice,
# the prompt encoder and mask decoder trained, Adam lr 1e-4, batch 2, 20 epochs. Decoder only: the
# image encoder frozen.
_base_ = [
    '../_base_/models/sam-vit-b_prompted.py',
    '../_base_/datasets/prompted_mmseg-layout_1024x1024.py',
    '../_base_/default_runtime.py',
    '../_base_/schedules/adam-cosine_20e_prompted.py',
]
model = dict(
    sam_checkpoint='checkpoints/sam_vit_b_01ec64.pth',
    decode_head=dict(
        train_prompting=dict(box_prob=1.0),  # boxes only
        test_prompting=dict(box=True, clicks=0),  # the protocol scores boxes; clicks=20 adds the click curve
        # COBOT's loss; its released Dice thresholds first, so there only BCE trains. iou=0: the IoU head
        # is not trained, as in COBOT (set iou=1.0 to keep SamPredictor's scores calibrated).
        loss_decode=dict(_delete_=True, type='PromptedMaskLoss', focal=0.0, dice=1.0, bce=1.0, iou=0.0),
    ),
)
log_processor = dict(by_epoch=True)  # epochs, as the schedule counts
