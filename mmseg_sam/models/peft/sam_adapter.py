"""SAM-Adapter (Chen et al., 2023) for SAM's ViT: task prompts added to the input of every block.

SAM-Adapter follows Explicit Visual Prompting (EVP, Liu et al., CVPR 2023): from the
image's high-frequency component (HFC) and the frozen patch embedding, a small prompt
generator makes one prompt map per block, added to that block's input.
"""

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from .base import (
    PEFT_METHODS,
    BasePEFTMethod,
    PEFTLayerMixin,
    block_index,
    check_blocks,
    check_places,
    select_blocks,
    set_place,
)

__all__ = ['SAMAdapter', 'SAMAdapterPromptGenerator', 'high_frequency_component']


def high_frequency_component(x: Tensor, freq_ratio: float) -> Tensor:
    """The high-frequency component of images, as EVP / SAM-Adapter compute it.

    The centred spectrum (``fft2`` then ``fftshift``) loses a centred square of side
    ``2 * int(sqrt(H * W * freq_ratio) // 2)``, i.e. about ``freq_ratio`` of the
    spectrum's area for a square image; the result is ``|Re(ifft2(...))|``. Computed
    in fp32.

    Args:
        x: (B, C, H, W) images.
        freq_ratio: fraction of the spectrum's area removed around the zero frequency.

    Returns:
        Tensor: (B, C, H, W), dtype of ``x``.
    """
    h, w = x.shape[-2:]
    half = int(math.sqrt(h * w * freq_ratio) // 2)
    spectrum = torch.fft.fftshift(torch.fft.fft2(x.float()), dim=(-2, -1))  # zero frequency at (H//2, W//2)
    mask = torch.ones(h, w, device=x.device)
    mask[max(h // 2 - half, 0) : h // 2 + half, max(w // 2 - half, 0) : w // 2 + half] = 0
    spectrum = torch.fft.ifftshift(spectrum * mask, dim=(-2, -1))
    return torch.fft.ifft2(spectrum).real.abs().to(x.dtype)


class SAMAdapterPromptGenerator(nn.Module, PEFTLayerMixin):
    """EVP's prompt generator: one prompt map per adapted block.

    With ``r = C // scale_factor``: ``f = embedding_generator(patch_embed(x)) +
    handcrafted_generator(HFC(x))`` (B, H/p, W/p, r), and block i's prompt is
    ``shared_mlp(lightweight_mlp[i](f))`` (B, H/p, W/p, C).

    It fills the backbone's ``input_prompts`` place: the backbone's forward calls
    :meth:`prepare` once (``f`` for the current images) and :meth:`prompt` before each
    block, and adds the prompt to the block's input. ``f`` is passed along by the
    backbone's forward, never stored here.

    Args:
        embed_dims: channels C of the backbone.
        patch_size: (p_h, p_w) of the backbone's patch embedding.
        in_channels: channels of the input image.
        block_indices: blocks that get a prompt.
        scale_factor: ``r = embed_dims // scale_factor``.
        freq_ratio: area fraction of the spectrum removed by the HFC.
        zero_init: zero ``shared_mlp`` so every prompt starts at zero.
    """

    def __init__(
        self,
        embed_dims: int,
        patch_size: tuple[int, int],
        in_channels: int,
        block_indices: Sequence[int],
        scale_factor: int = 32,
        freq_ratio: float = 0.25,
        zero_init: bool = False,
    ) -> None:
        super().__init__()
        hidden = embed_dims // scale_factor
        self.freq_ratio = freq_ratio
        self.embedding_generator = nn.Linear(embed_dims, hidden)
        self.handcrafted_generator = nn.Conv2d(in_channels, hidden, kernel_size=patch_size, stride=patch_size)
        self.lightweight_mlp = nn.ModuleDict(
            {str(i): nn.Sequential(nn.Linear(hidden, hidden), nn.GELU()) for i in block_indices}
        )
        self.shared_mlp = nn.Linear(hidden, embed_dims)
        self.reset_parameters(zero_init)

    def reset_parameters(self, zero_init: bool = False) -> None:
        """EVP's init: linears trunc-normal (std 0.02), convs normal (fan-out), zero biases."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = math.prod(m.kernel_size) * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                nn.init.zeros_(m.bias)
        if zero_init:
            nn.init.zeros_(self.shared_mlp.weight)
            nn.init.zeros_(self.shared_mlp.bias)

    def prepare(self, images: Tensor, embedding: Tensor) -> Tensor:
        """The prompt features ``f`` of a batch.

        Args:
            images: (B, C_in, H, W) the backbone's input.
            embedding: (B, H/p, W/p, C) its frozen patch embedding (detached).

        Returns:
            Tensor: (B, H/p, W/p, r).
        """
        hfc = self.handcrafted_generator(
            high_frequency_component(images, self.freq_ratio)
        )  # (B, r, H/p, W/p)
        # (B, r, H/p, W/p) -> (B, H/p, W/p, r)
        return self.embedding_generator(embedding) + hfc.permute(0, 2, 3, 1)

    forward = prepare

    def prompt(self, index: int, features: Tensor) -> Tensor | None:
        """Block ``index``'s prompt (B, h, w, C), or None for a block without one."""
        mlp = self.lightweight_mlp[str(index)] if str(index) in self.lightweight_mlp else None
        return None if mlp is None else self.shared_mlp(mlp(features))  # (B, h, w, r) -> (B, h, w, C)


@PEFT_METHODS.register_module()
class SAMAdapter(BasePEFTMethod):
    """SAM-Adapter / EVP prompts added to the input of SAM ViT blocks.

    Fills the backbone's ``input_prompts`` place with a
    :class:`SAMAdapterPromptGenerator`. SAM's modules and their state-dict keys are
    untouched.

    Args:
        scale_factor: bottleneck ``r = C // scale_factor``; must divide C (EVP: 32).
        freq_ratio: area fraction of the spectrum removed by the high-pass filter, in
            (0, 1) (SAM-Adapter: 0.25).
        blocks: block indices that get a prompt; all when None.
        zero_init: zero the shared MLP so that the adapted model starts as the base
            model. Off by default: EVP's init (trunc-normal, std 0.02) makes prompts
            small but non-zero, and a zero shared MLP gives the other generator layers
            no gradient in the first step.
    """

    needs_places = ('input_prompts',)

    def __init__(
        self,
        scale_factor: int = 32,
        freq_ratio: float = 0.25,
        blocks: Sequence[int] | None = None,
        zero_init: bool = False,
    ) -> None:
        if not isinstance(scale_factor, int) or isinstance(scale_factor, bool) or scale_factor <= 0:
            raise ValueError(f'SAMAdapter scale_factor must be a positive int, got {scale_factor!r}')
        if not isinstance(freq_ratio, (int, float)) or not 0 < freq_ratio < 1:
            raise ValueError(f'SAMAdapter freq_ratio must be in (0, 1), got {freq_ratio!r}')
        blocks = check_blocks('SAMAdapter', blocks)
        if not isinstance(zero_init, bool):
            raise ValueError(f'SAMAdapter zero_init must be a bool, got {zero_init!r}')
        self.scale_factor = scale_factor
        self.freq_ratio = float(freq_ratio)
        self.blocks = blocks
        self.zero_init = zero_init

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        check_places(self, model)
        proj = getattr(getattr(model, 'patch_embed', None), 'proj', None)
        if not isinstance(proj, nn.Conv2d):
            raise ValueError(
                f'SAMAdapter needs a SAM ViT with patch_embed.proj (nn.Conv2d), got {type(model).__name__}'
            )
        embed_dims = proj.out_channels
        if embed_dims % self.scale_factor:
            raise ValueError(
                f'SAMAdapter scale_factor {self.scale_factor} does not divide embed_dims {embed_dims}'
            )
        indices = [block_index(name) for name, _ in select_blocks(model, 'SAMAdapter', self.blocks)]
        generator = SAMAdapterPromptGenerator(
            embed_dims,
            tuple(proj.kernel_size),
            proj.in_channels,
            indices,
            scale_factor=self.scale_factor,
            freq_ratio=self.freq_ratio,
            zero_init=self.zero_init,
        ).to(device=proj.weight.device, dtype=proj.weight.dtype)
        set_place(model, 'input_prompts', generator, 'input_prompts')
        return {f'input_prompts.{name}': p for name, p in generator.named_parameters()}
