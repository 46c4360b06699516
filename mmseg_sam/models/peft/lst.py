"""Ladder Side-Tuning (LST, Sung et al., NeurIPS 2022) for SAM's ViT, as Conv-LoRA uses it.

A small side ViT runs next to the frozen SAM encoder. It reads the encoder's features
*detached* (the backbone's ``side_network`` place), so backpropagation never enters the encoder: the
activations of the SAM blocks need not be kept for the backward pass, which is what
makes LST memory-efficient. Its output is added to the last block's output, before the
neck, through a zero-initialised projection, so the model starts as the frozen model.
"""

import math
from functools import partial

import torch
from torch import Tensor, nn

from ..sam_modeling import Block
from .base import PEFT_METHODS, BasePEFTMethod, check_places, set_place

__all__ = ['LST', 'LadderSideNetwork']


class LadderSideNetwork(nn.Module):
    """The side network of LST; it fills the backbone's ``side_network`` place.

    With the detached block-0 input f_0 and the detached outputs f_1..f_J of the J
    global-attention blocks, all (B, H, W, C)::

        h = down_0(f_0)
        for j in 1..J:
            mu_j = sigmoid(alpha_j / T)
            h = mu_j * h + (1 - mu_j) * down_j(f_j)     # ladder fusion
            h = stage_j(h)                              # side transformer blocks
        neck input x (B, C, H, W) -> x.detach() + up(h) (permuted to (B, C, H, W))

    The backbone's forward hands it the detached block-0 input and the detached
    outputs of the blocks in ``tap_blocks`` (the global ones), and adds its output to
    the detached last block output that enters the neck.

    Args:
        embed_dims: width C of the SAM encoder.
        tap_blocks: indices of the J global-attention blocks it reads (one stage each, J >= 1).
        side_dims: width D of the side network.
        side_heads: attention heads of the side blocks (divides ``side_dims``).
        side_depth_per_stage: side transformer blocks per stage.
        mlp_ratio: MLP width of the side blocks over ``side_dims``.
        temperature: T of the gates ``mu_j = sigmoid(alpha_j / T)``.
    """

    def __init__(
        self,
        embed_dims: int,
        tap_blocks: tuple[int, ...],
        side_dims: int = 192,
        side_heads: int = 3,
        side_depth_per_stage: int = 1,
        mlp_ratio: float = 4.0,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        num_stages = len(tap_blocks)
        assert num_stages >= 1, 'LadderSideNetwork needs at least one stage'
        self.num_stages = num_stages
        self.tap_blocks = tuple(tap_blocks)
        self.temperature = float(temperature)
        # down[0] is the stem on the block-0 input; down[j] reads global block j.
        self.down = nn.ModuleList(nn.Linear(embed_dims, side_dims) for _ in range(num_stages + 1))
        self.alpha = nn.Parameter(torch.zeros(num_stages))  # (J,): mu_j = 0.5 at init
        self.stages = nn.ModuleList(
            nn.Sequential(
                *(
                    Block(
                        dim=side_dims,
                        num_heads=side_heads,
                        mlp_ratio=mlp_ratio,
                        qkv_bias=True,
                        norm_layer=partial(nn.LayerNorm, eps=1e-6),
                        act_layer=nn.GELU,
                        use_rel_pos=False,
                        window_size=0,
                    )
                    for _ in range(side_depth_per_stage)
                )
            )
            for _ in range(num_stages)
        )
        self.up = nn.Linear(side_dims, embed_dims)
        self._init_weights()

    def _init_weights(self) -> None:
        """ViT init (trunc-normal std 0.02, zero biases) for the side linears; ``up`` zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def extra_repr(self) -> str:
        return f'tap_blocks={self.tap_blocks}, temperature={self.temperature}'

    @property
    def mu(self) -> Tensor:
        """(J,) ladder gates ``sigmoid(alpha / T)``: the weight kept by the side path."""
        return torch.sigmoid(self.alpha / self.temperature)

    def forward(self, features: list[Tensor]) -> Tensor:
        """Run the side network.

        Args:
            features: J + 1 (B, H, W, C) maps: the block-0 input, then the outputs of
                the global blocks in order (detached).

        Returns:
            Tensor: (B, H, W, C) to add to the last block's output.
        """
        assert len(features) == self.num_stages + 1, (len(features), self.num_stages)
        mu = self.mu
        h = self.down[0](features[0])  # (B, H, W, C) -> (B, H, W, D)
        for j, stage in enumerate(self.stages):
            side = self.down[j + 1](features[j + 1])  # (B, H, W, C) -> (B, H, W, D)
            h = mu[j] * h + (1 - mu[j]) * side.to(h.dtype)
            h = stage(h)  # (B, H, W, D)
        return self.up(h)  # (B, H, W, D) -> (B, H, W, C)


@PEFT_METHODS.register_module()
class LST(BasePEFTMethod):
    """Ladder Side-Tuning: a small side ViT fused with SAM at its global-attention blocks.

    Fills the backbone's ``side_network`` place with a :class:`LadderSideNetwork` (the
    only trainable parameters); SAM's own modules and state-dict keys are unchanged. One side stage per global-attention block (2, 5, 8, 11 for ViT-B),
    each a ladder fusion ``h = mu_j h + (1 - mu_j) down_j(f_j)`` with
    ``mu_j = sigmoid(alpha_j / T)`` (alpha_j = 0 at init) and ``side_depth_per_stage``
    global-attention side blocks of segment_anything (no relative positions). The
    zero-initialised ``up`` projection makes the model equal the frozen one at init.

    Every encoder feature is detached, and so is the last block's output where it
    enters the neck: no gradient reaches ``patch_embed``, ``pos_embed`` or the blocks
    (nor the input image), so the encoder needs no activation memory for backward.
    Consequently LST refuses a model whose encoder (anything but the neck) already has
    trainable parameters (``frozen=False``, or a PEFT method applied before LST); a PEFT
    method applied to the blocks after LST would get no gradient either. Intermediate
    ``out_indices`` outputs of :class:`SAMViT` are the plain (frozen) block outputs.

    Parameters: ``(J + 1)(C D + D) + J + J d (12 D^2 + 13 D) + (D C + C)`` with
    d = ``side_depth_per_stage``; 2,665,924 for ViT-B (C 768, J 4) at the defaults.

    Args:
        side_dims: width D of the side network (> 0, divisible by ``side_heads``);
            192 as ViT-tiny.
        side_heads: attention heads of the side blocks (> 0); 3 as ViT-tiny.
        side_depth_per_stage: side transformer blocks after each fusion (>= 1).
        temperature: T of the fusion gates (> 0); 0.1 as LST.
    """

    needs_places = ('side_network',)

    def __init__(
        self,
        side_dims: int = 192,
        side_heads: int = 3,
        side_depth_per_stage: int = 1,
        temperature: float = 0.1,
    ) -> None:
        for name, value in (
            ('side_dims', side_dims),
            ('side_heads', side_heads),
            ('side_depth_per_stage', side_depth_per_stage),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f'LST {name} must be a positive int, got {value!r}')
        if side_dims % side_heads:
            raise ValueError(f'LST side_dims={side_dims} is not divisible by side_heads={side_heads}')
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature <= 0
        ):
            raise ValueError(f'LST temperature must be a finite number > 0, got {temperature!r}')
        self.side_dims = side_dims
        self.side_heads = side_heads
        self.side_depth_per_stage = side_depth_per_stage
        self.temperature = float(temperature)

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        check_places(self, model)  # a backbone that offers side_network: the contract's blocks and widths
        blocks = model.blocks
        global_blocks = [i for i, block in enumerate(blocks) if block.window_size == 0]
        if not global_blocks:
            raise ValueError(
                'LST fuses at global-attention blocks (window_size == 0), and the model has none '
                f'among its {len(blocks)} blocks (global_attn_indexes is empty)'
            )
        trainable = [
            n
            for n, p in model.named_parameters()
            if p.requires_grad and not n.startswith(('neck.', 'side_network.'))
        ]
        if trainable:
            raise ValueError(
                f'LST detaches the encoder from the loss, but it has trainable parameters {trainable[:3]}'
                f'{" ..." if len(trainable) > 3 else ""} ({len(trainable)} in all) that would never get '
                'a gradient; build the backbone with frozen=True and apply LST before other PEFT methods'
            )
        embed_dims = model.embed_dims
        lst = LadderSideNetwork(
            embed_dims,
            tuple(global_blocks),
            side_dims=self.side_dims,
            side_heads=self.side_heads,
            side_depth_per_stage=self.side_depth_per_stage,
            temperature=self.temperature,
        )
        set_place(model, 'side_network', lst, 'side_network')
        return {f'side_network.{name}': p for name, p in lst.named_parameters()}
