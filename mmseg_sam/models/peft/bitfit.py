"""BitFit (Zaken et al., 2021) for SAM's ViT: train only the encoder's bias terms."""

from collections.abc import Sequence

from torch import nn

from .base import (
    PEFT_METHODS,
    BasePEFTMethod,
    check_blocks,
    check_targets,
    match_modules,
    place_path,
    select_blocks,
)

__all__ = ['BitFit']

# Target name -> module path inside a block.
_TARGETS: dict[str, str] = {
    'qkv': 'attn.qkv',
    'proj': 'attn.proj',
    'lin1': 'mlp.lin1',
    'lin2': 'mlp.lin2',
    'norm1': 'norm1',
    'norm2': 'norm2',
}
# Modules outside the blocks whose biases `include_neck_and_patch_embed` trains: the patch
# embedding's projection (SAMViT: `patch_embed.proj`, SAM2Hiera: `trunk.patch_embed.proj`) and
# everything in the neck (SAM's LayerNorm2d, SAM 2's FPN convolutions).
_OUTSIDE_BLOCKS = r'(?:\w+\.)?patch_embed\.proj|neck(?:\.\w+)+'
# Set on a module whose bias BitFit made trainable, to refuse a second injection.
_MARK = '_bitfit_trained'


def _bias_of(module: nn.Module) -> nn.Parameter | None:
    bias = module._parameters.get('bias')
    return bias if isinstance(bias, nn.Parameter) else None


@PEFT_METHODS.register_module()
class BitFit(BasePEFTMethod):
    """Make existing bias terms of the encoder trainable; add nothing.

    No parameter is created and no module is wrapped, so state-dict keys are SAM's
    and a BitFit model is always "merged": there is nothing to merge or unmerge, and
    its checkpoint is a plain SAM encoder checkpoint with new biases. Layers without a
    bias (``qkv`` when ``qkv_bias=False``; the neck's convolutions) are skipped.

    Args:
        targets: which biases of each block: any of ``'qkv'``, ``'proj'``,
            ``'lin1'``, ``'lin2'`` (linears) and ``'norm1'``, ``'norm2'``
            (LayerNorms). Defaults to all.
        blocks: block indices whose biases train; all blocks when None.
        include_neck_and_patch_embed: also train ``patch_embed.proj``'s bias and
            every bias in the neck (SAM's: its two ``LayerNorm2d``; its convolutions
            have none).
    """

    mergeable = True

    def __init__(
        self,
        targets: Sequence[str] = tuple(_TARGETS),
        blocks: Sequence[int] | None = None,
        include_neck_and_patch_embed: bool = True,
    ) -> None:
        self.targets = check_targets('BitFit', targets, _TARGETS)
        self.blocks = check_blocks('BitFit', blocks)
        self.include_neck_and_patch_embed = bool(include_neck_and_patch_embed)

    def inject(self, model: nn.Module) -> dict[str, nn.Parameter]:
        matches = []
        for block_name, block in select_blocks(model, 'BitFit', self.blocks):
            order = {name: i for i, (name, _) in enumerate(block.named_modules())}
            paths = {target: place_path(block, _TARGETS[target]) for target in self.targets}
            for target in sorted(self.targets, key=lambda t: order.get(paths[t], -1)):  # module order
                path = paths[target]
                try:
                    matches.append((f'{block_name}.{path}', block.get_submodule(path)))
                except AttributeError as err:
                    raise ValueError(
                        f'BitFit target {target!r} needs {block_name}.{path}, which '
                        f'{type(block).__name__} does not have'
                    ) from err
        if self.include_neck_and_patch_embed:
            outside = [
                (n, m) for n, m in match_modules(model, _OUTSIDE_BLOCKS, nn.Module) if _bias_of(m) is not None
            ]
            if not outside:
                raise ValueError(
                    f'BitFit found no bias in modules matching {_OUTSIDE_BLOCKS!r}; '
                    'set include_neck_and_patch_embed=False for a backbone without them'
                )
            matches += outside
        with_bias = [(name, module) for name, module in matches if _bias_of(module) is not None]
        if not with_bias:
            raise ValueError(
                f'BitFit: none of the targets {list(self.targets)} has a bias (blocks={self.blocks})'
            )
        for name, module in with_bias:
            if getattr(module, _MARK, False):
                raise ValueError(f'{name}.bias is already trained by BitFit')
        params: dict[str, nn.Parameter] = {}
        for name, module in with_bias:
            setattr(module, _MARK, True)
            params[f'{name}.bias'] = _bias_of(module)
        return params
