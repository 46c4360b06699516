# The Conv-LoRA reference's optimisation (adamw-linear.py) for the length of mmseg's
# schedule_20k.py: linear decay to 0 at 20,000 iterations, validation and a checkpoint every
# 2,000 (mmseg's own interval). mmseg's SGD (lr 0.01) is tuned for full fine-tuning; the
# PEFT methods here train a few million parameters on a frozen encoder with AdamW at lr 1e-4.
_base_ = ['./adamw-linear.py']
train_cfg = dict(max_iters=20000, val_interval=2000)
default_hooks = dict(checkpoint=dict(interval=2000))
