# Conv-LoRA (Zhong et al. 2024), the reference preset: LoRA on every block's qkv (r 3, alpha 32)
# with 8 conv experts at scales 1..8 and a noisy top-1 gate; the load-balancing loss is added.
_base_ = ['../_base_/benchmarks/trans10k_v1_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='ConvLoRA', rank=3, alpha=32, num_experts=8)))
# Experts no sample was routed to get no gradient in a step: DDP must look for unused parameters.
find_unused_parameters = True
