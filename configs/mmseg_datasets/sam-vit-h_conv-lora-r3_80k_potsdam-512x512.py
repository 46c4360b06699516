# sam-vit-b_conv-lora-r3_80k_potsdam-512x512.py with SAM ViT-H (python
# tools/download_sam_checkpoint.py vit_h --out-dir checkpoints/).
_base_ = ['./sam-vit-b_conv-lora-r3_80k_potsdam-512x512.py']
model = dict(sam_checkpoint='checkpoints/sam_vit_h_4b8939.pth', backbone=dict(arch='vit_h'))
