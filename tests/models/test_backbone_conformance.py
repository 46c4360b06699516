"""Every registered backbone family x every PEFT preset: the contract of SAMBackboneBase, checked alike.

A family is a registered subclass of :class:`SAMBackboneBase`; it passes this file with its
tiny fixture (``CONFORMANCE`` in ``tests/models/<family>_fixtures.py``; see
docs/adding_a_backbone.md). Per family and preset (at the sizes of ``tests/peft_tiny.py``):
it builds, or, exactly where a method ``needs_places`` a place the family declares absent,
it is refused naming that place and the family's reason; outputs have the declared
``strides`` on square and non-square inputs; a training step gives every trainable
parameter a gradient and no frozen one; the state dict round-trips strictly; a mergeable
report merges exactly and any other is refused.
"""

from collections.abc import Callable
from typing import Any

import pytest
import torch
from mmseg.models.decode_heads.decode_head import BaseDecodeHead
from mmseg.registry import MODELS
from torch import nn

from mmseg_sam.models.backbones.base import (
    BACKBONE_CONTRACT,
    BACKBONE_PLACES,
    BLOCK_CONTRACT,
    FAMILY_CONTRACT,
    SAMBackboneBase,
    SAMBackboneBlock,
    registered_families,
)
from mmseg_sam.models.peft import PEFTLayerMixin, collect_aux_losses, merge_peft
from mmseg_sam.models.peft.base import refused_places
from mmseg_sam.models.peft.presets import PRESETS
from tests.peft_tiny import tiny

from .families import Family, family_fixtures

FAMILIES: dict[str, Family] = family_fixtures()  # every tests/models/*_fixtures.py's CONFORMANCE


def _preset_id(item: Any) -> str:
    return getattr(item, 'key', None) or item.name


def build_or_refuse(
    build: Callable[..., SAMBackboneBase],
    family: type[SAMBackboneBase],
    settings: dict[str, Any],
    seed: int = 0,
) -> SAMBackboneBase | None:
    """The family with a preset's settings, or None after checking the refusal its declarations predict.

    A preset is refused exactly when one of its methods ``needs_places`` a place the family
    lists in ``absent_places`` (:func:`refused_places`); the refusal names the place and
    quotes the family's reason.
    """
    torch.manual_seed(seed)
    refused = refused_places(family, settings.get('peft'))
    if not refused:
        return build(**settings)
    place, reason = next(iter(refused.items()))
    with pytest.raises(ValueError, match=f'needs a backbone with an? {place} place') as err:
        build(**settings)
    assert str(err.value).endswith(reason)
    return None


def _outputs(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    with collect_aux_losses() as aux:
        outs = model(x)
    return outs, aux


def test_every_registered_family_has_a_fixture():
    registered = {
        name
        for name, cls in MODELS.module_dict.items()
        if isinstance(cls, type) and issubclass(cls, SAMBackboneBase)
    }
    assert registered == set(FAMILIES), (
        'a registered SAMBackboneBase family needs its tiny fixture: CONFORMANCE in tests/models/<family>_fixtures.py'
    )


@pytest.mark.parametrize('family', sorted(FAMILIES))
@pytest.mark.parametrize('item', PRESETS, ids=_preset_id)
def test_family_conforms_under_preset(family, item):
    check_conformance(FAMILIES[family], MODELS.get(family), tiny(item))


def check_conformance(fixture: Family, family: type[SAMBackboneBase], settings: dict[str, Any]) -> None:
    """Every check of this file for one family with one preset's settings (any family, registered or not)."""
    model = build_or_refuse(fixture.build, family, settings)
    if model is None:
        return  # refused for a reason the family declares (checked in _build)
    assert isinstance(model, SAMBackboneBase)
    assert set(model.backbone_places) | set(model.absent_places) == set(BACKBONE_PLACES)

    # forward shapes, square and non-square, at the declared strides
    model.eval()
    for h, w in fixture.sizes:
        assert h % model.size_divisor == 0 and w % model.size_divisor == 0
        with torch.no_grad():
            outs, _ = _outputs(model, torch.randn(1, 3, h, w))
        assert len(outs) == len(model.strides)
        for out, stride in zip(outs, model.strides, strict=True):
            assert out.shape == (1, model.out_channels, h // stride, w // stride)

    # a training step: every trainable parameter gets a gradient, no frozen one does
    model.train()
    x = torch.randn(2, 3, *fixture.sizes[0])
    outs, aux = _outputs(model, x)
    loss = sum(o.float().square().mean() for o in outs) + sum(aux.values())
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = set(trainable)
    if trainable:
        loss.backward()
    for name, module in model.named_modules():
        if isinstance(module, PEFTLayerMixin):
            expected -= {f'{name}.{p}' for p in module.conditional_parameters()}
    grads = {n for n, p in model.named_parameters() if p.grad is not None}
    assert expected <= grads, f'trainable without a gradient: {sorted(expected - grads)}'
    assert grads <= trainable, f'frozen with a gradient: {sorted(grads - trainable)}'
    assert (
        sorted(trainable) == sorted(n for names in model.peft_report.parameter_names.values() for n in names)
        or not model.frozen
    )

    # strict round trip into a fresh build with other random weights
    model.eval()
    with torch.no_grad():
        for p in model.parameters():  # non-zero PEFT updates, or the comparisons are vacuous
            p.add_(torch.randn_like(p) * 0.05)
    clone = build_or_refuse(fixture.build, family, settings, seed=1).eval()
    clone.load_state_dict(model.state_dict(), strict=True)
    x = torch.randn(1, 3, *fixture.sizes[-1])
    with torch.no_grad():
        before, _ = _outputs(model, x)
        for a, b in zip(before, _outputs(clone, x)[0], strict=True):
            torch.testing.assert_close(a, b)

    # merge where every method is mergeable, a refusal naming the others
    report = model.peft_report
    if not report.trainable:
        with pytest.raises(ValueError, match='no PEFT method to merge'):
            merge_peft(model)
    elif all(report.mergeable.values()):
        merge_peft(model)
        with torch.no_grad():
            for a, b in zip(before, _outputs(model, x)[0], strict=True):
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    else:
        refused = [name for name, ok in report.mergeable.items() if not ok]
        with pytest.raises(
            ValueError, match=f'cannot merge {refused!r}'.replace('[', r'\[').replace(']', r'\]')
        ):
            merge_peft(model)


# ----------------------------------------------------------------------------- the contract itself
class _ToyBlock(nn.Module, SAMBackboneBlock):
    def __init__(self, omit: str) -> None:
        super().__init__()
        self.attn = nn.Identity()
        values = dict(
            with_cp=False,
            window_size=0,
            attn_adapter=nn.Identity(),
            mlp_adapter=nn.Identity(),
            mlp_parallel=None,
        )
        for name, value in values.items():
            if name != omit:
                setattr(self, name, value)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


# what a family tells the tools (FAMILY_CONTRACT)
_TOY_FAMILY = dict(
    family='toy',
    family_title='Toy',
    arch_zoo={'one': {}},
    arch_labels={'one': 'Toy-1'},
    report_archs=('one',),
    decode_head='SAMMaskDecoderHead',
)


class _ToyFamily(SAMBackboneBase):
    """A third family in a few lines: declares the contract except ``omit`` (everything when '')."""

    def __init__(self, omit: str = '', call_setup: bool = True, absent: dict | None = None) -> None:
        super().__init__()
        values = dict(
            blocks=nn.ModuleList([_ToyBlock(omit)]),
            peft_block_prefix='',
            backbone_places=(),
            absent_places=dict.fromkeys(BACKBONE_PLACES, 'a toy') if absent is None else absent,
            size_divisor=1,
            strides=(1,),
            embed_dims=4,
            out_channels=4,
            patch_embed=nn.ModuleDict(dict(proj=nn.Conv2d(3, 4, 1))),
            **_TOY_FAMILY,
        )
        for name, value in values.items():
            if name != omit:
                setattr(self, name, value)
        if call_setup:
            self.setup(None, True, None)

    check_with_cp = staticmethod(lambda with_cp: with_cp)

    def load_pretrained(self, checkpoint: str) -> dict[str, torch.Tensor]:
        return {}


def test_a_family_declaring_the_contract_builds():
    model = _ToyFamily()
    assert model.with_cp is False and model.peft_report.total == 0
    with pytest.raises(NotImplementedError, match=r'_ToyFamily has no official checkpoint format'):
        model.official_checkpoint(nn.Module(), {}, 'x.pth', False)


def test_registered_families_describe_themselves_to_the_tools():
    families = registered_families()
    assert {name: cls.__name__ for name, cls in families.items()} == {'sam': 'SAMViT', 'sam2': 'SAM2Hiera'}
    for name, cls in families.items():
        assert cls.family == name and cls.family_title
        assert set(cls.report_archs) <= set(cls.arch_zoo) and set(cls.arch_labels) == set(cls.arch_zoo)
        head = MODELS.get(cls.decode_head)
        assert isinstance(head, type) and issubclass(head, BaseDecodeHead), cls.decode_head


@pytest.mark.parametrize('name', [n for n in (*BACKBONE_CONTRACT, *FAMILY_CONTRACT) if n != 'with_cp'])
def test_a_family_omitting_a_contract_attribute_fails_at_construction_naming_it(name):
    with pytest.raises(
        TypeError, match=rf"_ToyFamily does not declare the backbone contract attributes \[.*'{name}'"
    ):
        _ToyFamily(omit=name)


@pytest.mark.parametrize('name', [n for n in BLOCK_CONTRACT if n != 'place_paths'])
def test_a_block_omitting_a_contract_attribute_fails_at_construction_naming_it(name):
    with pytest.raises(
        TypeError,
        match=rf"blocks.0 \(_ToyBlock\) does not declare the block contract attributes \['{name}'\]",
    ):
        _ToyFamily(omit=name)


def test_a_family_without_its_methods_or_setup_fails_at_construction():
    class NoMethods(_ToyFamily):
        check_with_cp = SAMBackboneBase.check_with_cp
        load_pretrained = SAMBackboneBase.load_pretrained

    with pytest.raises(TypeError, match=r"attributes \['check_with_cp', 'load_pretrained'\]"):
        NoMethods()
    with pytest.raises(
        TypeError, match=r'_ToyFamily.__init__ must call self.setup\(checkpoint, frozen, peft\)'
    ):
        _ToyFamily(call_setup=False)

    class Sub(_ToyFamily):  # a subclass without its own __init__ is checked too
        pass

    with pytest.raises(TypeError, match=r'Sub.__init__ must call self.setup'):
        Sub(call_setup=False)


def test_a_family_without_its_patch_embedding_fails_at_construction():
    with pytest.raises(TypeError, match=r'_ToyFamily has no nn.Conv2d patch embedding at patch_embed.proj'):
        _ToyFamily(omit='patch_embed')


def test_backbone_places_must_be_accounted_for():
    with pytest.raises(TypeError, match=r"in neither \['side_network'\]"):
        _ToyFamily(absent={'input_prompts': 'a toy'})
    with pytest.raises(TypeError, match=r"unknown \['input_promts'\]"):
        _ToyFamily(absent={'input_promts': 'a typo', 'input_prompts': 'x', 'side_network': 'y'})


def test_place_paths_must_name_sub_modules():
    class Misspelt(_ToyBlock):
        place_paths = {'mlp.lin1': 'mlp.layer.0'}

    class Family(_ToyFamily):
        def __init__(self) -> None:
            nn.Module.__init__(self)
            self.blocks = nn.ModuleList([Misspelt('')])
            self.peft_block_prefix, self.backbone_places = '', ()
            self.absent_places = dict.fromkeys(BACKBONE_PLACES, 'a toy')
            self.size_divisor, self.strides, self.embed_dims, self.out_channels = 1, (1,), 4, 4
            vars(self).update(_TOY_FAMILY)
            self.patch_embed = nn.ModuleDict(dict(proj=nn.Conv2d(3, 4, 1)))
            self.setup(None, True, None)

    with pytest.raises(TypeError, match=r"place_paths name no sub-module: \['mlp.layer.0'\]"):
        Family()
