import pytest
import torch
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample

from mmseg_sam.models.decode_heads import SAMMaskDecoderHead


def _head(tiny_head, checkpoint=None, **kwargs):
    kwargs.setdefault('num_classes', 2)
    kwargs.setdefault('out_channels', 1)
    kwargs.setdefault('threshold', 0.5)
    kwargs.setdefault('loss_decode', dict(type='CrossEntropyLoss', use_sigmoid=True))
    return SAMMaskDecoderHead(checkpoint=checkpoint and str(checkpoint), **tiny_head, **kwargs).eval()


def _reference_masks(reference_sam, head, embedding):
    """segment_anything's own MaskDecoder.predict_masks, prompt-free, on one image.

    The reference decoder has the head's number of mask tokens and the head's weights
    (token self-attention makes the output depend on how many tokens take part, so
    SAM's 4-token decoder is not the reference for a 1-token head).
    """
    from mmseg_sam.models.sam_modeling import MaskDecoder, TwoWayTransformer

    ref = MaskDecoder(
        transformer_dim=32,
        transformer=TwoWayTransformer(depth=2, embedding_dim=32, mlp_dim=64, num_heads=2),
        num_multimask_outputs=head.num_mask_tokens - 1,
        iou_head_hidden_dim=32,
    )
    missing, unexpected = ref.load_state_dict(head.mask_decoder.state_dict(), strict=False)
    assert not unexpected and all(k.startswith('iou_prediction_head.') for k in missing)
    pe = reference_sam.prompt_encoder.pe_layer(embedding.shape[-2:]).unsqueeze(0)
    sparse = torch.empty(1, 0, embedding.shape[1])
    dense = reference_sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embedding)
    masks, _ = ref.predict_masks(embedding, pe, sparse, dense)
    return masks


def test_binary_equals_segment_anything_decoder(reference_sam, sam_checkpoint, tiny_head):
    head = _head(tiny_head, sam_checkpoint)
    embedding = torch.randn(2, 32, 4, 5)
    with torch.no_grad():
        out = head([embedding])
        ref = torch.cat([_reference_masks(reference_sam, head, e[None]) for e in embedding])
    assert out.shape == (2, 1, 16, 20)
    assert (out - ref).abs().max().item() <= 1e-5


def test_per_class_tokens_start_from_token_zero(reference_sam, sam_checkpoint, tiny_head):
    head = _head(
        tiny_head,
        sam_checkpoint,
        num_classes=4,
        out_channels=4,
        threshold=None,
        loss_decode=dict(type='CrossEntropyLoss'),
    )
    sam_decoder = reference_sam.mask_decoder
    for i in range(4):
        assert torch.equal(head.mask_decoder.mask_tokens.weight[i], sam_decoder.mask_tokens.weight[0])
        for ours, theirs in zip(
            head.mask_decoder.output_hypernetworks_mlps[i].parameters(),
            sam_decoder.output_hypernetworks_mlps[0].parameters(),
        ):
            assert torch.equal(ours, theirs)
    embedding = torch.randn(1, 32, 4, 4)
    with torch.no_grad():
        out = head([embedding])
        ref = _reference_masks(reference_sam, head, embedding)
    assert out.shape == (1, 4, 16, 16)
    assert (out - ref).abs().max().item() <= 1e-5
    # identical tokens: every class starts with the same mask
    assert torch.allclose(out[:, :1].expand_as(out), out, atol=1e-5)


def test_trainable_parts(tiny_head):
    head = _head(tiny_head)
    assert not hasattr(head, 'conv_seg')
    assert not hasattr(head.mask_decoder, 'iou_prediction_head')
    assert not any(p.requires_grad for p in head.prompt_encoder.parameters())
    assert all(p.requires_grad for p in head.mask_decoder.parameters())


def test_sam_sized_binary_decoder_trainable_count():
    """The Conv-LoRA paper's binary decoder: 3,505,536 trainable parameters."""
    head = SAMMaskDecoderHead(
        num_classes=2,
        out_channels=1,
        threshold=0.5,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
    )
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 3_505_536


def test_every_trainable_parameter_gets_a_gradient(tiny_head):
    head = _head(
        tiny_head, num_classes=3, out_channels=3, threshold=None, loss_decode=dict(type='CrossEntropyLoss')
    ).train()
    samples = []
    for _ in range(2):
        sample = SegDataSample(metainfo=dict(img_shape=(64, 64), pad_shape=(64, 64)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, 3, (1, 64, 64)))
        samples.append(sample)
    losses = head.loss([torch.randn(2, 32, 4, 4)], samples, train_cfg={})
    losses['loss_ce'].backward()
    for name, p in head.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_predict_upsamples_to_input(tiny_head):
    head = _head(tiny_head)
    metas = [dict(img_shape=(64, 80), pad_shape=(64, 80))]
    seg = head.predict([torch.randn(1, 32, 4, 5)], metas, test_cfg={})
    assert seg.shape == (1, 1, 64, 80)


def test_errors(tiny_head, sam_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="mode must be one of .*got 'tokens'"):
        _head(tiny_head, mode='tokens')
    with pytest.raises(ValueError, match='image embedding has 16 channels, the decoder expects 32'):
        _head(tiny_head)([torch.randn(1, 16, 4, 4)])
    torch.save({'image_encoder.pos_embed': torch.zeros(1)}, tmp_path / 'enc.pth')
    with pytest.raises(ValueError, match=r"has no mask_decoder weights \(it holds: \['image_encoder'\]\)"):
        _head(tiny_head, tmp_path / 'enc.pth')


def test_binary_accuracy_is_that_of_the_thresholded_decision(tiny_head):
    """mmseg's acc_seg takes an argmax over one channel (always 0: the background share)."""
    head = _head(tiny_head, threshold=0.3)
    logits = torch.logit(torch.tensor([[0.9, 0.35], [0.2, 0.1]])).reshape(1, 1, 2, 2)  # > 0.3: 1 1 / 0 0
    sample = SegDataSample(metainfo=dict(img_shape=(2, 2)))
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[1, 0], [255, 0]]]))  # 3 labelled: 2 right
    losses = head.loss_by_feat(logits, [sample])
    assert losses['acc_seg'].item() == pytest.approx(100 * 2 / 3)
    assert head.threshold == 0.3


@pytest.mark.parametrize('threshold', [1.5, 0, True, None])
def test_binary_threshold_is_a_probability(tiny_head, threshold):
    with pytest.raises(ValueError, match=r'threshold must be a probability in \(0, 1\)'):
        _head(tiny_head, threshold=threshold)


def test_binary_threshold_defaults_to_one_half(tiny_head):
    head = SAMMaskDecoderHead(
        num_classes=2,
        out_channels=1,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=True),
        **tiny_head,
    )
    assert head.threshold == 0.5
