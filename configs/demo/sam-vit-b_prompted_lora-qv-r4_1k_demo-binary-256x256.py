# `SAM_CHECKPOINT=/path/sam_vit_b_01ec64.pth make demo DEMO_ARGS=--prompted`: SAM ViT-B (frozen) +
# LoRA on q and v + SAM's whole promptable decoder, fine-tuned with box, point and correction-click
# prompts on the objects of the synthetic demo data at 256x256 (the prompted demo's recipe, see
# sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py; pos_embed and the global rel_pos
# tables are resized from 1024 on load).
_base_ = ['./sam-vit-small_prompted_lora-qv-r4_1k_demo-binary-128x128.py']
img_size = 256
crop_size = (img_size, img_size)
model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(arch='vit_b', img_size=img_size),
    decode_head=dict(
        image_size=img_size,
        patch_size=16,
        embed_dims=256,
        decoder_num_heads=8,
        decoder_mlp_dims=2048,
        iou_head_hidden_dim=256,
    ),
)
train_pipeline = [
    dict(step, scale=crop_size) if step.type == 'Resize' else step for step in _base_.train_pipeline
]
test_pipeline = [
    dict(step, scale=crop_size) if step.type == 'Resize' else step for step in _base_.test_pipeline
]
train_dataloader = dict(batch_size=2, dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
optim_wrapper = dict(optimizer=dict(lr=1e-4))
