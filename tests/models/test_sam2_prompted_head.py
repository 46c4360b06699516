"""SAM2PromptedHead + SAM2Hiera: sam2's own prompted outputs (eval and training), checkpoints, losses, errors."""

import copy
import importlib
import sys
import types
from pathlib import Path

import pytest
import torch
from mmseg.registry import MODELS
from sam2.modeling.sam2_base import SAM2Base
from torch import nn

from mmseg_sam.models.decode_heads import PromptSet, SAM2PromptedHead
from tests.conftest import TINY_IMG, tiny_prompted_cfg
from tests.models.test_sam_prompted_head import MEAN, STD, _blob_masks, _sample

from .sam2_fixtures import (
    TINY_SAM2_ARCH,
    TINY_SAM2_DECODER,
    TINY_SAM2_IMG,
    hf_sam2_model,
    official_checkpoint,
    sam2_heads,
    sam2_image_encoder,
)

TINY_SAM2_PROMPTED_HEAD = dict(TINY_SAM2_DECODER, iou_head_hidden_dim=32, image_size=TINY_SAM2_IMG)
# What an official checkpoint holds for video only (sam2_fixtures writes two such keys).
VIDEO_ONLY = ('maskmem_tpos_enc', 'memory_encoder.')
BOXES = torch.tensor([[10.0, 8.0, 35.0, 29.0], [30.0, 40.0, 57.0, 59.0]])


def sam2_prompted_cfg(checkpoint: str | Path | None, head: dict | None = None, **backbone) -> dict:
    """A ``SAMPromptedEncoderDecoder`` config on the tiny SAM 2 (SAM2Hiera + SAM2PromptedHead): the tiny
    SAM's (:func:`tiny_prompted_cfg`, same input size) with the encoder and head swapped."""
    assert TINY_SAM2_IMG == TINY_IMG
    cfg = tiny_prompted_cfg(checkpoint)
    cfg['backbone'] = dict(type='SAM2Hiera', arch=dict(TINY_SAM2_ARCH), **copy.deepcopy(backbone))
    cfg['decode_head'] = dict(
        type='SAM2PromptedHead', num_classes=2, **TINY_SAM2_PROMPTED_HEAD, **copy.deepcopy(head or {})
    )
    return cfg


class SAM2ImageModel(nn.Module):
    """What SAM2ImagePredictor and SAM2Base's image path use of a ``SAM2Base``, in sam2's own modules.

    ``forward_image``, ``_prepare_backbone_features``, ``_forward_sam_heads`` and ``device``
    are SAM2Base's own code; the attributes they read are SAM 2.1's settings (the decoder
    with ``build_sam2``'s dynamic multimask fallback). Its state dict is an official SAM 2.1
    checkpoint's image part.
    """

    forward_image = SAM2Base.forward_image
    _prepare_backbone_features = SAM2Base._prepare_backbone_features
    _forward_sam_heads = SAM2Base._forward_sam_heads
    device = SAM2Base.device

    def __init__(self) -> None:
        super().__init__()
        self.image_encoder = sam2_image_encoder()
        self.sam_prompt_encoder, self.sam_mask_decoder = sam2_heads()
        decoder = self.sam_mask_decoder  # build_sam2's hydra overrides
        decoder.dynamic_multimask_via_stability = True
        decoder.dynamic_multimask_stability_delta = 0.05
        decoder.dynamic_multimask_stability_thresh = 0.98
        dims = TINY_SAM2_DECODER['embed_dims']
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, dims))
        self.image_size = TINY_SAM2_IMG
        self.use_high_res_features_in_sam = True
        self.num_feature_levels = 3
        self.directly_add_no_mem_embed = True
        self.sam_prompt_embed_dim, self.sam_image_embedding_size = dims, TINY_SAM2_IMG // 16
        self.pred_obj_scores, self.soft_no_obj_ptr, self.fixed_no_obj_ptr = True, False, True
        self.obj_ptr_proj = nn.Identity()  # the object pointer is video-only
        self.no_obj_ptr = torch.zeros(1, dims)

    def load_official(self, state: dict[str, torch.Tensor]) -> None:
        """Strict load of an official SAM 2.1 state dict's image part (every key but the video modules)."""
        self.load_state_dict({k: v for k, v in state.items() if not k.startswith(VIDEO_ONLY)}, strict=True)

    def set_features(self, predictor, image: torch.Tensor) -> None:
        """``SAM2ImagePredictor.set_image`` after its torchvision transform: ``image`` (1, 3, S, S) normalised."""
        backbone_out = self.forward_image(image)
        _, vision_feats, _, feat_sizes = self._prepare_backbone_features(backbone_out)
        vision_feats[-1] = vision_feats[-1] + self.no_mem_embed
        feats = [
            feat.permute(1, 2, 0).view(1, -1, *size)
            for feat, size in zip(vision_feats[::-1], feat_sizes[::-1])
        ][::-1]
        predictor.reset_predictor()
        predictor._features = {'image_embed': feats[-1], 'high_res_feats': feats[:-1]}
        predictor._orig_hw = [tuple(image.shape[-2:])]
        predictor._is_image_set = True


@pytest.fixture
def sam2_predictor_cls():
    """sam2's SAM2ImagePredictor; its transforms import torchvision, which these machines cannot
    import: that import is stubbed, and the stub's image transform raises (the tests set the
    features as ``set_image`` does, with sam2's own ``forward_image``)."""
    names = ('torchvision', 'torchvision.transforms')
    mine = ('sam2.sam2_image_predictor', 'sam2.utils.transforms')
    saved = {k: v for k, v in sys.modules.items() if k.startswith((*names, *mine))}
    stub, transforms = types.ModuleType('torchvision'), types.ModuleType('torchvision.transforms')

    def to_tensor(*args, **kwargs):
        raise AssertionError('torchvision stub called: set the features as set_image does')

    transforms.ToTensor = lambda: to_tensor
    transforms.Resize = transforms.Normalize = lambda *args, **kwargs: nn.Identity()
    stub.transforms = transforms
    sys.modules.update(dict(zip(names, (stub, transforms))))
    try:
        predictor = importlib.import_module('sam2.sam2_image_predictor').SAM2ImagePredictor
    finally:  # the stub only for that import
        for name in names:
            sys.modules.pop(name, None)
    try:
        yield predictor
    finally:
        for name in mine:
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@pytest.fixture(scope='module')
def sam2_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp('sam2_prompted') / 'sam2.1_tiny.pt'
    official_checkpoint(path)
    return path


@pytest.fixture(scope='module')
def reference(sam2_checkpoint) -> SAM2ImageModel:
    ref = SAM2ImageModel()
    ref.load_official(torch.load(sam2_checkpoint, weights_only=True)['model'])
    return ref.eval()


@pytest.fixture(scope='module')
def image() -> torch.Tensor:
    gen = torch.Generator().manual_seed(3)
    return torch.randint(0, 256, (3, TINY_SAM2_IMG, TINY_SAM2_IMG), generator=gen).float()


def _prompted(checkpoint, **head) -> nn.Module:
    return MODELS.build(sam2_prompted_cfg(checkpoint, head=head))


def _sam2_outputs(ref: SAM2ImageModel, inputs: torch.Tensor, coords, labels, multimask: bool):
    """sam2's prompt encoder and decoder called as SAM2ImagePredictor._predict calls them: all four outputs."""
    backbone_out = ref.forward_image(inputs)
    feats = backbone_out['backbone_fpn']
    sparse, dense = ref.sam_prompt_encoder(points=(coords, labels), boxes=None, masks=None)
    return ref.sam_mask_decoder(
        image_embeddings=feats[2] + ref.no_mem_embed.reshape(1, -1, 1, 1),
        image_pe=ref.sam_prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=multimask,
        repeat_image=coords.shape[0] > 1,
        high_res_features=feats[:2],
    )


@pytest.mark.parametrize('prompt', ['box', 'point'])
def test_box_and_point_equal_sam2(sam2_checkpoint, reference, image, prompt):
    """Same weights: a box (single mask, with build_sam2's fallback) and one point (3 masks) give sam2's
    low-res logits, IoU and object score; the masks are SAM2Transforms.postprocess_masks'."""
    model = _prompted(sam2_checkpoint).eval()
    inputs = ((image - MEAN) / STD)[None]
    if prompt == 'box':
        prompts, multimask = PromptSet(boxes=BOXES), False
        coords = BOXES.reshape(-1, 2, 2)
        labels = torch.tensor([[2, 3]], dtype=torch.int).repeat(2, 1)
    else:
        coords, labels = torch.tensor([[[20.0, 18.0]]]), torch.tensor([[1]])
        prompts, multimask = PromptSet(points=(coords, labels)), True
    with torch.no_grad():
        ref_low, ref_iou, _, ref_obj = _sam2_outputs(reference, inputs, coords, labels, multimask)
        head = model.decode_head
        features = head(model.extract_feat(inputs))
        low_res, iou, obj = head.decode(head.image_features(features, 0), prompts, multimask)
        masks = head.postprocess(low_res, (TINY_SAM2_IMG,) * 2, (96, 80))
    assert low_res.shape == (len(coords), 3 if multimask else 1, 16, 16)
    torch.testing.assert_close(low_res, ref_low, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(obj, ref_obj, atol=1e-5, rtol=1e-5)
    expected = torch.nn.functional.interpolate(ref_low, (96, 80), mode='bilinear', align_corners=False)
    torch.testing.assert_close(masks, expected, atol=1e-5, rtol=1e-5)
    if prompt == 'box':  # build_sam2's fallback took a multimask output for some box here
        head.mask_decoder.dynamic_multimask_via_stability = False
        with torch.no_grad():
            single, *_ = head.decode(head.image_features(features, 0), prompts, multimask)
        assert not torch.allclose(single, low_res)


def test_training_equals_forward_sam_heads(sam2_checkpoint, reference, image):
    """In training, SAM2Base._forward_sam_heads: no fallback, and -1024 where the object score is <= 0
    (the object head shifted so that one of the two boxes has no object)."""
    model = _prompted(sam2_checkpoint).train()
    ref = copy.deepcopy(reference).train()
    inputs = ((image - MEAN) / STD)[None]
    head = model.decode_head
    with torch.no_grad():
        features = head.image_features(head(model.extract_feat(inputs)), 0)
        _, _, obj = head.decode(features, PromptSet(boxes=BOXES), False)
        assert obj[0] != obj[1]
        for decoder in (head.mask_decoder, ref.sam_mask_decoder):
            decoder.pred_obj_score_head.layers[-1].bias -= obj.mean()
        low_res, iou, obj = head.decode(features, PromptSet(boxes=BOXES), False)
        backbone_out = ref.forward_image(inputs)
        _, vision_feats, _, sizes = ref._prepare_backbone_features(backbone_out)
        emb = (vision_feats[-1] + ref.no_mem_embed).permute(1, 2, 0).view(1, -1, *sizes[-1])
        high_res = [f.permute(1, 2, 0).view(1, -1, *s) for f, s in zip(vision_feats[:2], sizes[:2])]
        points = dict(point_coords=BOXES.reshape(-1, 2, 2), point_labels=torch.tensor([[2, 3], [2, 3]]))
        ref_low, _, ref_iou, *_, ref_obj = ref._forward_sam_heads(
            emb.expand(2, -1, -1, -1), points, high_res_features=[h.expand(2, -1, -1, -1) for h in high_res]
        )
    assert (obj > 0).sum() == 1 and (low_res[obj[:, 0] <= 0] == -1024).all()
    torch.testing.assert_close(low_res, ref_low, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref_iou, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(obj, ref_obj, atol=1e-5, rtol=1e-5)


def test_head_loads_every_decoder_key_from_official_and_hugging_face(tmp_path, sam2_checkpoint, reference):
    hf = hf_sam2_model()
    hf.save_pretrained(tmp_path / 'hf')
    heads = [
        SAM2PromptedHead(checkpoint=str(p), **TINY_SAM2_PROMPTED_HEAD)
        for p in (sam2_checkpoint, tmp_path / 'hf')
    ]
    ours = heads[0].state_dict()
    ref = {
        f'{part}.{k}': v
        for part, m in (
            ('prompt_encoder', reference.sam_prompt_encoder),
            ('mask_decoder', reference.sam_mask_decoder),
        )
        for k, v in m.state_dict().items()
    }
    ref['no_mem_embed'] = reference.no_mem_embed
    assert set(ours) == set(ref)
    assert all(torch.equal(ours[k], ref[k]) for k in ref)
    from mmseg_sam.utils.sam2_checkpoint import hf_to_sam2_state_dict

    converted = hf_to_sam2_state_dict(hf.state_dict())
    hf_state = heads[1].state_dict()
    torch.testing.assert_close(hf_state['no_mem_embed'], converted['no_mem_embed'], atol=0, rtol=0)
    torch.testing.assert_close(
        hf_state['mask_decoder.pred_obj_score_head.layers.2.weight'],
        converted['sam_mask_decoder.pred_obj_score_head.layers.2.weight'],
        atol=0,
        rtol=0,
    )


def test_losses_with_the_object_score_and_gradients(sam2_checkpoint, image):
    """loss_obj is the object logits' BCE to 1 (weight 1 by default, 3 here); every decoder part, conv_s0 /
    conv_s1 and no_mem_embed get gradients, the frozen prompt encoder none."""
    torch.manual_seed(0)
    model = _prompted(
        sam2_checkpoint,
        freeze=('prompt_encoder',),
        object_loss_weight=3.0,
        train_prompting=dict(box_prob=1.0),
    ).train()
    inputs = ((image - MEAN) / STD)[None]
    losses = model.loss(inputs, [_sample(_blob_masks(), boxes=BOXES)])
    assert set(losses) == {'decode.loss_focal', 'decode.loss_dice', 'decode.loss_iou', 'decode.loss_obj'}
    head = model.decode_head
    with torch.no_grad():
        _, _, obj = head.decode(
            head.image_features(head(model.extract_feat(inputs)), 0), PromptSet(boxes=BOXES), False
        )
    expected = 3 * torch.nn.functional.binary_cross_entropy_with_logits(obj, torch.ones_like(obj))
    torch.testing.assert_close(losses['decode.loss_obj'].detach(), expected, atol=1e-5, rtol=1e-5)
    sum(losses.values()).backward()
    for name, p in model.named_parameters():
        if name.startswith('decode_head.prompt_encoder') or not p.requires_grad:
            assert p.grad is None, name
    for part in (
        'no_mem_embed',
        'mask_decoder.conv_s0',
        'mask_decoder.conv_s1',
        'mask_decoder.pred_obj_score_head',
    ):
        grads = [p.grad for n, p in head.named_parameters() if n.startswith(part)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), part


def test_single_point_rounds_and_clicks(sam2_checkpoint, image):
    """The parent's rules on SAM 2: a single point trains the lowest of three, rounds feed points and
    masks, clicks evaluate; every loss finite."""
    torch.manual_seed(0)
    model = _prompted(
        sam2_checkpoint,
        train_prompting=dict(box_prob=0.0, correction_rounds=2, mask_only_rounds=1),
        test_prompting=dict(box=True, clicks=2),
    )
    points, labels = torch.tensor([[[20.0, 18.0]], [[44.0, 50.0]]]), torch.ones(2, 1, dtype=torch.long)
    sample = _sample(_blob_masks(), boxes=BOXES, points=points, point_labels=labels)
    inputs = ((image - MEAN) / STD)[None]
    losses = model.train().loss(inputs, [sample])
    assert all(torch.isfinite(v) for v in losses.values())
    with torch.no_grad():
        out = model.eval().predict(inputs, [sample])[0].pred_instances
    assert out.box_masks.shape == (2, TINY_SAM2_IMG, TINY_SAM2_IMG)
    assert out.click_masks.shape == (2, 2, TINY_SAM2_IMG, TINY_SAM2_IMG)


def test_errors(sam2_checkpoint):
    with pytest.raises(ValueError, match='in_index must name 3 backbone levels'):
        SAM2PromptedHead(in_index=(2,), **TINY_SAM2_PROMPTED_HEAD)
    with pytest.raises(ValueError, match='patch_size=8: SAM 2 decodes the stride-16 level'):
        SAM2PromptedHead(patch_size=8, **TINY_SAM2_PROMPTED_HEAD)
    with pytest.raises(ValueError, match='object_loss_weight must be a number >= 0'):
        SAM2PromptedHead(object_loss_weight=-1, **TINY_SAM2_PROMPTED_HEAD)
    with pytest.raises(ValueError, match='dynamic_multimask_via_stability must be True or False'):
        SAM2PromptedHead(dynamic_multimask_via_stability='yes', **TINY_SAM2_PROMPTED_HEAD)
    cfg = sam2_prompted_cfg(None)
    cfg['decode_head']['image_size'] = 48
    with pytest.raises(ValueError, match='image_size=48 is not a multiple of the backbone size_divisor=32'):
        MODELS.build(cfg)
    head = SAM2PromptedHead(**TINY_SAM2_PROMPTED_HEAD)
    feats = [torch.zeros(1, 32, 8 * s, 8 * s) for s in (4, 2, 1)]  # a 128x128 input's levels
    with pytest.raises(ValueError, match=r'FPN levels of shapes .* the head expects \[\(32, 16, 16\)'):
        head(feats)
    other = official_checkpoint(sam2_checkpoint.parent / 'wide.pt')
    other['no_mem_embed'] = torch.zeros(1, 1, 8)
    torch.save({'model': other}, sam2_checkpoint.parent / 'wide.pt')
    with pytest.raises(ValueError, match=r'no_mem_embed has shape \(1, 1, 8\)'):
        SAM2PromptedHead(checkpoint=str(sam2_checkpoint.parent / 'wide.pt'), **TINY_SAM2_PROMPTED_HEAD)
