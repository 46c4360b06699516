# The Conv-LoRA reference's optimisation (adamw-linear.py) for 2000 iterations: linear decay
# to 0 at iteration 2000, validation and a checkpoint every 500.
_base_ = ['./adamw-linear.py']
param_scheduler = [dict(type='PolyLR', power=1.0, eta_min=0.0, begin=0, end=2000, by_epoch=False)]
train_cfg = dict(max_iters=2000, val_interval=500)
default_hooks = dict(checkpoint=dict(interval=500))
