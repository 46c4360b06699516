"""A tiny SAM 2 (Hiera) in the official package's own modules and in Hugging Face's, for tests."""

from pathlib import Path

import torch
from sam2.modeling.backbones.hieradet import Hiera
from sam2.modeling.backbones.image_encoder import FpnNeck, ImageEncoder
from sam2.modeling.position_encoding import PositionEmbeddingSine
from sam2.modeling.sam.mask_decoder import MaskDecoder
from sam2.modeling.sam.prompt_encoder import PromptEncoder
from sam2.modeling.sam.transformer import TwoWayTransformer
from torch import nn

from mmseg_sam.models.backbones import SAM2Hiera
from tests.models.families import Family

# 16-dim trunk (16, 32, 64, 128 per stage), 6 blocks, block 4 global; windows 4/2/2/1 so
# a 64x64 input (16x16 tokens) is windowed, and a 96x64 one is padded in stage 3.
TINY_SAM2_IMG = 64
TINY_SAM2_ARCH = dict(
    embed_dims=16,
    num_heads=1,
    stages=(1, 2, 2, 1),
    global_att_blocks=(4,),
    window_pos_embed_bkg_spatial_size=(4, 4),
    window_spec=(4, 2, 2, 1),
    out_channels=32,
)
TINY_SAM2_DECODER = dict(embed_dims=32, decoder_depth=2, decoder_num_heads=2, decoder_mlp_dims=64)
# the conformance test's fixture (tests/models/families.py): windowed at 64x64, padded at 64x96
CONFORMANCE = {'SAM2Hiera': Family(lambda **kw: SAM2Hiera(arch=TINY_SAM2_ARCH, **kw), ((64, 64), (64, 96)))}


def sam2_image_encoder() -> ImageEncoder:
    """sam2's own ``ImageEncoder`` in the tiny size, with sam2's SAM 2.1 settings."""
    arch = TINY_SAM2_ARCH
    trunk = Hiera(
        embed_dim=arch['embed_dims'],
        num_heads=arch['num_heads'],
        stages=arch['stages'],
        global_att_blocks=arch['global_att_blocks'],
        window_pos_embed_bkg_spatial_size=arch['window_pos_embed_bkg_spatial_size'],
        window_spec=arch['window_spec'],
    )
    neck = FpnNeck(
        position_encoding=PositionEmbeddingSine(arch['out_channels'], warmup_cache=False),
        d_model=arch['out_channels'],
        backbone_channel_list=trunk.channel_list,
        fpn_top_down_levels=[2, 3],
        fpn_interp_model='nearest',
    )
    return ImageEncoder(trunk=trunk, neck=neck, scalp=1)


def sam2_heads() -> tuple[PromptEncoder, MaskDecoder]:
    """sam2's prompt encoder and mask decoder in the tiny size, as SAM 2.1 builds them."""
    dims = TINY_SAM2_DECODER['embed_dims']
    grid = TINY_SAM2_IMG // 16
    prompt_encoder = PromptEncoder(
        embed_dim=dims,
        image_embedding_size=(grid, grid),
        input_image_size=(TINY_SAM2_IMG,) * 2,
        mask_in_chans=16,
    )
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=TINY_SAM2_DECODER['decoder_depth'],
            embedding_dim=dims,
            mlp_dim=TINY_SAM2_DECODER['decoder_mlp_dims'],
            num_heads=TINY_SAM2_DECODER['decoder_num_heads'],
        ),
        transformer_dim=dims,
        iou_head_depth=3,
        iou_head_hidden_dim=dims,
        use_high_res_features=True,
        iou_prediction_use_sigmoid=True,
        pred_obj_scores=True,
        pred_obj_scores_mlp=True,
        use_multimask_token_for_obj_ptr=True,
    )
    return prompt_encoder, decoder


def randomize(module: nn.Module, seed: int = 0, std: float = 0.2) -> nn.Module:
    """Every parameter and buffer of ``module`` drawn from N(0, std) (so no zero-init hides a bug)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=gen) * std)
    return module


def official_checkpoint(path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Write a tiny SAM 2.1 checkpoint in the official layout (``{'model': ...}``) and return its state."""
    encoder = randomize(sam2_image_encoder(), seed)
    prompt_encoder, decoder = (randomize(m, seed + i + 1) for i, m in enumerate(sam2_heads()))
    state = {f'image_encoder.{k}': v for k, v in encoder.state_dict().items()}
    state.update({f'sam_prompt_encoder.{k}': v for k, v in prompt_encoder.state_dict().items()})
    state.update({f'sam_mask_decoder.{k}': v for k, v in decoder.state_dict().items()})
    gen = torch.Generator().manual_seed(seed + 9)
    dims = TINY_SAM2_DECODER['embed_dims']
    state['no_mem_embed'] = torch.randn(1, 1, dims, generator=gen)
    # Video-only modules an official checkpoint also holds, which an image model ignores.
    state['maskmem_tpos_enc'] = torch.randn(7, 1, 1, 16, generator=gen)
    state['memory_encoder.out_proj.weight'] = torch.randn(16, dims, 1, 1, generator=gen)
    torch.save({'model': state}, path)
    return state


def hf_sam2_model(seed: int = 0):
    """A Hugging Face ``Sam2Model`` of the tiny size with random weights (positional copies equal)."""
    from transformers import Sam2Config, Sam2Model
    from transformers.models.sam2.configuration_sam2 import (
        Sam2HieraDetConfig,
        Sam2MaskDecoderConfig,
        Sam2PromptEncoderConfig,
        Sam2VisionConfig,
    )

    arch = TINY_SAM2_ARCH
    dims = [arch['embed_dims'] * 2**i for i in range(4)]
    backbone = Sam2HieraDetConfig(
        hidden_size=arch['embed_dims'],
        num_attention_heads=arch['num_heads'],
        blocks_per_stage=list(arch['stages']),
        embed_dim_per_stage=dims,
        num_attention_heads_per_stage=[arch['num_heads'] * 2**i for i in range(4)],
        window_size_per_stage=list(arch['window_spec']),
        global_attention_blocks=list(arch['global_att_blocks']),
        window_positional_embedding_background_size=list(arch['window_pos_embed_bkg_spatial_size']),
        image_size=[TINY_SAM2_IMG, TINY_SAM2_IMG],
    )
    size = TINY_SAM2_IMG
    vision = Sam2VisionConfig(
        backbone_config=backbone,
        backbone_channel_list=dims[::-1],
        fpn_hidden_size=arch['out_channels'],
        backbone_feature_sizes=[[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
    )
    dec = TINY_SAM2_DECODER
    config = Sam2Config(
        vision_config=vision,
        prompt_encoder_config=Sam2PromptEncoderConfig(
            hidden_size=dec['embed_dims'], image_size=size, patch_size=16, mask_input_channels=16
        ),
        mask_decoder_config=Sam2MaskDecoderConfig(
            hidden_size=dec['embed_dims'],
            mlp_dim=dec['decoder_mlp_dims'],
            num_hidden_layers=dec['decoder_depth'],
            num_attention_heads=dec['decoder_num_heads'],
            iou_head_hidden_dim=dec['embed_dims'],
        ),
    )
    model = randomize(Sam2Model(config).eval(), seed)
    with torch.no_grad():  # one matrix in sam2: HF's two copies are equal in converted weights
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    return model
