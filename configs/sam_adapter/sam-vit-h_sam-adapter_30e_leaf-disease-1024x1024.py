# SAM-Adapter (Chen et al. 2023): high-frequency + patch-embedding prompts (width C/32, a quarter
# of the spectrum removed by the high-pass filter) added to every block.
_base_ = ['../_base_/benchmarks/leaf_disease_1024x1024.py']
model = dict(backbone=dict(peft=dict(type='SAMAdapter', scale_factor=32, freq_ratio=0.25)))
