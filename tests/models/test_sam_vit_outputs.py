"""What SAMViT returns (with_neck, out_indices) and how SAMEncoderDecoder fits inputs to it:
padding to the patch size at inference, slide inference with both SAM heads, the data
preprocessor's size checked at construction."""

import pytest
import torch
from mmengine.config import Config, ConfigDict
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_sam.models.backbones import SAMViT
from tests.conftest import REPO, TINY_ARCH, TINY_IMG, tiny_model_cfg, tiny_segmentor_cfg

FOUR_LEVELS = dict(TINY_ARCH, num_layers=4, global_attn_indexes=(1, 3))


def test_default_returns_out_indices_then_neck(tiny_arch):
    """Unchanged default: the out_indices maps, then the neck of the last block's output."""
    torch.manual_seed(0)
    default = SAMViT(arch=tiny_arch, img_size=TINY_IMG, out_indices=(0,)).eval()
    levels = SAMViT(arch=tiny_arch, img_size=TINY_IMG, out_indices=(0, 1), with_neck=False).eval()
    levels.load_state_dict(default.state_dict())
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        outs, maps = default(image), levels(image)
        assert [tuple(o.shape) for o in outs] == [(1, 32, 4, 6), (1, 32, 4, 6)]
        assert torch.equal(outs[0], maps[0])
        assert torch.allclose(outs[1], default.neck(maps[1]), atol=1e-6)


def test_without_neck_returns_one_map_per_level_and_trains_no_neck():
    model = SAMViT(
        arch=dict(FOUR_LEVELS), img_size=TINY_IMG, out_indices=(0, 1, 2, 3), with_neck=False, frozen=False
    )
    outs = model(torch.randn(2, 3, 64, 64))
    assert [tuple(o.shape) for o in outs] == [(2, 32, 4, 4)] * 4
    sum(o.square().mean() for o in outs).backward()
    for name, p in model.named_parameters():
        if name.startswith('neck.'):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None, name
    # the last map is block 3's output itself, not the neck's
    with torch.no_grad():
        x = model.patch_embed(torch.ones(1, 3, 64, 64)) + model.pos_embed
        for block in model.blocks:
            x = block(x)
        assert torch.allclose(model.eval()(torch.ones(1, 3, 64, 64))[-1], x.permute(0, 3, 1, 2), atol=1e-6)


def test_without_neck_keeps_sams_checkpoint_keys(sam_checkpoint, tiny_arch):
    model = SAMViT(
        arch=tiny_arch, img_size=TINY_IMG, checkpoint=str(sam_checkpoint), out_indices=(0, 1), with_neck=False
    )
    assert any(k.startswith('neck.') for k in model.state_dict())


@pytest.mark.parametrize(
    'kwargs, error, message',
    [
        (dict(with_neck=False), ValueError, r'out_indices must name distinct blocks, got \(\)'),
        (dict(with_neck=False, out_indices=(1, 1)), ValueError, r'distinct blocks, got \(1, 1\)'),
        (dict(with_neck=0, out_indices=(1,)), TypeError, 'with_neck must be a bool, got 0'),
        (
            dict(with_neck=False, out_indices=(1,), peft=dict(type='LST', side_dims=12, side_heads=3)),
            ValueError,
            'LadderSideNetwork adds its output to the neck input, which with_neck=False does not run',
        ),
    ],
)
def test_bad_outputs(tiny_arch, kwargs, error, message):
    with pytest.raises(error, match=message):
        SAMViT(arch=tiny_arch, img_size=TINY_IMG, **kwargs)


def _segmentor(head: str, test_cfg: dict | None = None):
    cfg = tiny_segmentor_cfg()
    if head == 'mask_classification':
        cfg['decode_head'].update(
            num_classes=5, out_channels=None, threshold=None, mode=head, num_queries=3,
            loss_decode=dict(type='MaskClassificationLoss'),
        )  # fmt: skip
    elif head == 'per_class_tokens':
        cfg['decode_head'].update(num_classes=5, out_channels=5, threshold=None)
    cfg['test_cfg'] = test_cfg and ConfigDict(test_cfg)
    return MODELS.build(cfg).eval()


def _samples(h: int, w: int) -> list[SegDataSample]:
    sample = SegDataSample(metainfo=dict(img_shape=(h, w), pad_shape=(h, w), ori_shape=(h, w)))
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, h, w, dtype=torch.long))
    return [sample]


@pytest.mark.parametrize('mode', ['binary', 'per_class_tokens', 'mask_classification'])
def test_whole_inference_pads_to_the_patch_size_and_crops_back(mode):
    """A 70x50 input is scored as the top-left 70x50 of its zero-padded 80x64 version."""
    torch.manual_seed(0)
    model = _segmentor(mode)
    image = torch.randn(1, 3, 70, 50)
    with torch.no_grad():
        [result] = model(image, _samples(70, 50), mode='predict')
        padded = torch.nn.functional.pad(image, (0, 14, 0, 10))
        expected = model.encode_decode(padded, [dict(img_shape=(80, 64), pad_shape=(80, 64))])[..., :70, :50]
    channels = 1 if mode == 'binary' else 5
    assert result.seg_logits.data.shape == (channels, 70, 50)
    if mode == 'binary':
        expected = expected.sigmoid()  # EncoderDecoder.postprocess_result reports probabilities
    assert torch.allclose(result.seg_logits.data, expected[0], atol=1e-5)


@pytest.mark.parametrize('mode', ['per_class_tokens', 'mask_classification'])
def test_slide_inference_with_crops_not_multiple_of_the_patch(mode):
    """mmseg's slide mode with 40x40 crops (padded to 48) over a 64x88 image: scores of the image size."""
    torch.manual_seed(0)
    model = _segmentor(mode, dict(mode='slide', crop_size=(40, 40), stride=(24, 24)))
    with torch.no_grad():
        [result] = model(torch.randn(1, 3, 64, 88), _samples(64, 88), mode='predict')
    assert result.seg_logits.data.shape == (5, 64, 88)
    assert result.pred_sem_seg.data.shape == (1, 64, 88)
    if mode == 'mask_classification':  # sums of probabilities over the queries, averaged over crops
        assert bool((result.seg_logits.data >= 0).all())


def test_slide_crop_of_the_patch_size_needs_no_padding():
    model = _segmentor('mask_classification', dict(mode='slide', crop_size=(48, 48), stride=(32, 32)))
    with torch.no_grad():
        [result] = model(torch.randn(1, 3, 64, 80), _samples(64, 80), mode='predict')
    assert result.seg_logits.data.shape == (5, 64, 80)


def test_data_preprocessor_size_must_fit_the_patch_size():
    cfg = tiny_segmentor_cfg()
    cfg['data_preprocessor']['size'] = (769, 769)
    with pytest.raises(ValueError, match=r'size=\(769, 769\) is not a multiple of the backbone size_divisor 16: .*'
                       r'size=\(784, 784\) \(and give the backbone img_size=784\)'):  # fmt: skip
        MODELS.build(cfg)


def test_sam_checkpoint_loads_the_encoder_under_mmseg_heads(sam_checkpoint, reference_sam):
    """UPerHead takes no SAM weights: sam_checkpoint fills only the backbone's checkpoint."""
    cfg = Config.fromfile(REPO / 'configs/_base_/models/sam-vit-b_upernet.py')
    model_cfg = tiny_model_cfg(cfg.model)
    model_cfg.backbone.arch = dict(TINY_ARCH)  # the checkpoint's 2 blocks
    model_cfg.backbone.out_indices = (0, 1)
    model_cfg.neck = dict(type='MultiLevelNeck', in_channels=[32, 32], out_channels=32, scales=[2, 1])
    model_cfg.decode_head.update(in_channels=[32, 32], in_index=[0, 1])
    model_cfg.auxiliary_head.in_index = 1
    model_cfg.sam_checkpoint = str(sam_checkpoint)
    model = MODELS.build(model_cfg)
    assert model.backbone.checkpoint == str(sam_checkpoint)
    assert torch.equal(
        model.backbone.blocks[1].attn.qkv.weight, reference_sam.image_encoder.blocks[1].attn.qkv.weight
    )
    assert not hasattr(model.decode_head, 'checkpoint')


def test_sam_checkpoint_needs_a_backbone_that_loads_it():
    cfg = tiny_segmentor_cfg(sam_checkpoint='sam.pth')
    cfg['backbone'] = dict(type='ResNetV1c', depth=18)
    with pytest.raises(
        ValueError, match=r"sam_checkpoint='sam.pth' is loaded by the backbone, but 'ResNetV1c' takes"
    ):
        MODELS.build(cfg)
