"""SAM2MaskDecoderHead: equal to sam2's MaskDecoder on official weights, its modes, its checkpoints."""

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_sam.models.backbones import SAM2Hiera
from mmseg_sam.models.decode_heads import SAM2MaskDecoderHead

from .sam2_fixtures import (
    TINY_SAM2_ARCH,
    TINY_SAM2_DECODER,
    hf_sam2_model,
    official_checkpoint,
    sam2_heads,
)

_CE = dict(type='CrossEntropyLoss')


def _features(seed: int = 0, batch: int = 2, grid: int = 4) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    dims = TINY_SAM2_DECODER['embed_dims']
    return [torch.randn(batch, dims, grid * s, grid * s, generator=gen) for s in (4, 2, 1)]


def test_masks_equal_sam2_predict_masks_with_official_weights(tmp_path):
    """T tokens copied from token 0 (and MLPs from MLP 0): the masks are sam2's predict_masks with that
    token set, no sparse prompt, the no-mask dense embedding, no_mem_embed and conv_s0/conv_s1."""
    state = official_checkpoint(tmp_path / 'sam2.pt')
    head = SAM2MaskDecoderHead(
        num_classes=4, checkpoint=str(tmp_path / 'sam2.pt'), loss_decode=_CE, **TINY_SAM2_DECODER
    ).eval()
    prompt_encoder, decoder = sam2_heads()
    for prefix, module in (('sam_prompt_encoder.', prompt_encoder), ('sam_mask_decoder.', decoder)):
        module.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    with torch.no_grad():  # sam2's decoder with the head's token set
        decoder.mask_tokens.weight.copy_(decoder.mask_tokens.weight[:1].repeat(4, 1))
        for mlp in decoder.output_hypernetworks_mlps[1:]:
            mlp.load_state_dict(decoder.output_hypernetworks_mlps[0].state_dict())
    feats = _features()
    with torch.no_grad():
        got = head(feats)
        s0, s1, embedding = feats
        dense = prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(2, -1, 4, 4)
        expected, *_ = decoder.predict_masks(
            embedding + state['no_mem_embed'].reshape(1, -1, 1, 1),
            prompt_encoder.get_dense_pe(),
            torch.zeros(2, 0, 32),
            dense,
            repeat_image=False,
            high_res_features=[decoder.conv_s0(s0), decoder.conv_s1(s1)],
        )
    assert got.shape == (2, 4, 16, 16)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(head.no_mem_embed, state['no_mem_embed'])


def test_hugging_face_folder_loads_the_same_head(tmp_path):
    hf = hf_sam2_model()
    hf.save_pretrained(tmp_path / 'hf')
    from mmseg_sam.utils.sam2_checkpoint import hf_to_sam2_state_dict

    torch.save({'model': hf_to_sam2_state_dict(hf.state_dict())}, tmp_path / 'official.pt')
    heads = [
        SAM2MaskDecoderHead(
            num_classes=2, out_channels=1, checkpoint=str(p), loss_decode=_CE, **TINY_SAM2_DECODER
        )
        for p in (tmp_path / 'hf', tmp_path / 'official.pt')
    ]
    feats = _features()
    with torch.no_grad():
        torch.testing.assert_close(heads[0].eval()(feats), heads[1].eval()(feats), atol=0, rtol=0)


@pytest.mark.parametrize(
    ('kwargs', 'shape'),
    [
        (dict(num_classes=2, out_channels=1, loss_decode=_CE), (2, 1, 16, 16)),
        (dict(num_classes=5, loss_decode=_CE), (2, 5, 16, 16)),
        (
            dict(
                num_classes=5,
                mode='mask_classification',
                num_queries=3,
                loss_decode=dict(type='MaskClassificationLoss'),
            ),
            None,
        ),
    ],
)
def test_modes_train_every_parameter(kwargs, shape):
    head = MODELS.build(dict(type='SAM2MaskDecoderHead', **kwargs, **TINY_SAM2_DECODER)).train()
    out = head(_features())
    if shape is None:
        cls_logits, masks = out
        assert cls_logits.shape == (2, 3, 6) and masks.shape == (2, 3, 16, 16)
        loss = cls_logits.square().mean() + masks.square().mean()
    else:
        assert out.shape == shape
        loss = out.square().mean()
    loss.backward()
    trainable = {n: p for n, p in head.named_parameters() if p.requires_grad}
    assert not any(n.startswith('prompt_encoder.') for n in trainable)  # frozen, as in the SAM head
    assert 'no_mem_embed' in trainable and 'mask_decoder.conv_s0.weight' in trainable
    unused = [n for n, p in trainable.items() if p.grad is None]
    # the object-score token only steers the others through self-attention: it gets a gradient too
    assert unused == []


def test_segmentor_with_sam2hiera_trains_and_predicts(tmp_path):
    official_checkpoint(tmp_path / 'sam2.pt')
    model = MODELS.build(
        dict(
            type='SAMEncoderDecoder',
            sam_checkpoint=str(tmp_path / 'sam2.pt'),
            data_preprocessor=dict(type='SegDataPreProcessor', size=(64, 64)),
            backbone=dict(type='SAM2Hiera', arch=dict(TINY_SAM2_ARCH), peft=dict(type='LoRA', rank=2)),
            decode_head=dict(
                type='SAM2MaskDecoderHead',
                num_classes=2,
                out_channels=1,
                loss_decode=dict(CE_SIGMOID),
                **TINY_SAM2_DECODER,
            ),
        )
    )
    assert isinstance(model.backbone, SAM2Hiera)
    from tests.conftest import tiny_batch

    inputs, samples = tiny_batch()
    losses = model(inputs, samples, mode='loss')
    sum(v for k, v in losses.items() if 'loss' in k).backward()
    lora = [p for n, p in model.backbone.named_parameters() if 'lora_' in n]
    assert lora and all(p.grad is not None for p in lora)
    model.eval()
    with torch.no_grad():  # a size that is not a multiple of 32 is padded by the segmentor and cropped back
        [pred] = model(
            torch.randn(1, 3, 50, 70),
            [samples[0].__class__(metainfo=dict(img_shape=(50, 70), ori_shape=(50, 70)))],
            mode='predict',
        )
    assert pred.pred_sem_seg.data.shape == (1, 50, 70)


CE_SIGMOID = dict(type='CrossEntropyLoss', use_sigmoid=True)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r'in_index must name 3 backbone levels .* got -1'):
        SAM2MaskDecoderHead(num_classes=2, out_channels=1, in_index=-1, loss_decode=_CE, **TINY_SAM2_DECODER)
    head = SAM2MaskDecoderHead(
        num_classes=2, out_channels=1, in_index=(2, 1, 0), loss_decode=_CE, **TINY_SAM2_DECODER
    )
    with pytest.raises(ValueError, match='are not strides 4, 8, 16 of one image'):
        head(_features())
