"""tools/dataset_converters/*.py and mmseg_sam.datasets.converters on fake copies of each release."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmseg_sam.datasets import converters
from tests.conftest import REPO
from tests.datasets.fake_releases import (
    RELEASES,
    SIZE,
    blob,
    build_and_convert,
    load_converter,
    write_binary_mask,
    write_image,
)


def _read_label(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        assert img.mode == 'L', f'{path}: mode {img.mode}, expected a single-channel uint8 PNG'
        return np.asarray(img)


@pytest.fixture(scope='module')
def converted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple]:
    tmp = tmp_path_factory.mktemp('converted')
    return {name: build_and_convert(name, tmp) for name in RELEASES}


@pytest.mark.parametrize('name', list(RELEASES))
def test_converter_writes_mmseg_layout_with_class_index_masks(converted, name):
    release, out = converted[name]
    assert sorted(p.name for p in (out / 'img_dir').iterdir()) == sorted(release.labels)
    for split, labels in release.labels.items():
        images = sorted((out / 'img_dir' / split).iterdir())
        masks = sorted((out / 'ann_dir' / split).iterdir())
        assert [p.name for p in images] == sorted(f'{n}{release.image_suffix}' for n in labels)
        assert [p.name for p in masks] == sorted(f'{n}.png' for n in labels)
        for name_, expected in labels.items():
            label = _read_label(out / 'ann_dir' / split / f'{name_}.png')
            with Image.open(out / 'img_dir' / split / f'{name_}{release.image_suffix}') as img:
                assert img.mode == 'RGB' and (img.height, img.width) == label.shape == SIZE
            assert 255 not in label
            if release.jpeg_masks:  # JPEG ringing may flip a few edge pixels, never more
                assert np.mean(label != expected) < 0.02 and set(np.unique(label)) <= {0, 1}
            else:
                np.testing.assert_array_equal(label, expected, err_msg=f'{name}/{split}/{name_}')


def test_binary_converters_keep_foreground_as_one(converted):
    for name in ('cod10k', 'sbu', 'kvasir_seg', 'massachusetts_roads'):
        _, out = converted[name]
        labels = [_read_label(p) for p in (out / 'ann_dir' / 'train').iterdir()]
        assert all(set(np.unique(lab)) == {0, 1} for lab in labels), name


def test_cod10k_keeps_camouflaged_images_unless_asked(tmp_path):
    release = RELEASES['cod10k'](tmp_path / 'src')
    tool = load_converter('cod10k')
    assert tool.convert(release.root, tmp_path / 'cam') == {'train': 2, 'test': 2}
    assert tool.convert(release.root, tmp_path / 'all', include_noncam=True) == {'train': 3, 'test': 3}
    noncam = _read_label(next((tmp_path / 'all/ann_dir/train').glob('*NonCAM*')))
    assert not noncam.any()


def test_trans10k_v1_writes_easy_and_hard_lists(converted):
    release, out = converted['trans10k_v1']
    for subset, names in release.subsets.items():
        assert (out / 'splits' / f'{subset}.txt').read_text().split() == names


def test_trans10k_v2_reads_palette_colour_and_grey_masks(converted):
    release, out = converted['trans10k_v2']
    # train: palette PNGs, val: RGB colours, test: grey indices; all must give the same classes
    for split in ('train', 'val', 'test'):
        for name, expected in release.labels[split].items():
            label = _read_label(out / 'ann_dir' / split / f'{name}.png')
            np.testing.assert_array_equal(label, expected)
            assert len(np.unique(label)) == 3 and label.max() <= 11


@pytest.mark.slow
def test_cli_runs_as_a_script_and_refuses_to_overwrite(tmp_path):
    """One real subprocess (python tools/dataset_converters/kvasir_seg.py ...), then main() in-process."""
    release = RELEASES['kvasir_seg'](tmp_path / 'Kvasir-SEG')
    out = tmp_path / 'out'
    cmd = [
        sys.executable,
        str(REPO / 'tools/dataset_converters/kvasir_seg.py'),
        str(release.root),
        '-o',
        str(out),
        '--test-list',
        str(release.kwargs['test_list']),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'train: 3 images' in proc.stdout and 'test: 1 images' in proc.stdout
    assert len(list((out / 'img_dir/train').glob('*.jpg'))) == 3
    assert set(np.unique(_read_label(next((out / 'ann_dir/test').iterdir())))) == {0, 1}
    # the same command line in-process (main() parses it): the output folders are now taken
    with pytest.raises(FileExistsError, match=f'{out / "img_dir" / "train"} is not empty; pass --overwrite'):
        load_converter('kvasir_seg').main(cmd[2:])
    assert load_converter('kvasir_seg').main([*cmd[2:], '--overwrite', '--nproc', '2']) == 0
    assert len(list((out / 'img_dir/train').glob('*.jpg'))) == 3


def test_overwrite_replaces_stale_files(tmp_path):
    release = RELEASES['sbu'](tmp_path / 'src')
    tool = load_converter('sbu')
    tool.convert(release.root, tmp_path / 'out')
    stale = tmp_path / 'out/img_dir/train/stale.jpg'
    stale.write_bytes(b'')
    with pytest.raises(FileExistsError, match='not empty'):
        tool.convert(release.root, tmp_path / 'out')
    assert tool.convert(release.root, tmp_path / 'out', overwrite=True) == {'train': 2, 'test': 1}
    assert not stale.exists()


def test_parallel_conversion_matches_serial(tmp_path):
    release = RELEASES['isic2017'](tmp_path / 'src')
    tool = load_converter('isic2017')
    tool.convert(release.root, tmp_path / 'serial')
    tool.convert(release.root, tmp_path / 'parallel', nproc=2)
    for path in sorted((tmp_path / 'serial').rglob('*.*')):
        twin = tmp_path / 'parallel' / path.relative_to(tmp_path / 'serial')
        assert twin.read_bytes() == path.read_bytes(), twin


def test_missing_mask_names_the_image_and_the_expected_mask(tmp_path):
    release = RELEASES['isic2017'](tmp_path / 'src')
    (release.root / 'ISIC-2017_Training_Part1_GroundTruth/ISIC_0000001_segmentation.png').unlink()
    with pytest.raises(
        FileNotFoundError, match=r'1 image\(s\) in .*ISIC-2017_Training_Data have no mask'
    ) as err:
        load_converter('isic2017').convert(release.root, tmp_path / 'out')
    assert 'ISIC_0000001.jpg' in str(err.value) and 'ISIC_0000001_segmentation.png' in str(err.value)


def test_missing_folder_is_named(tmp_path):
    release = RELEASES['sbu'](tmp_path / 'src')
    shutil.rmtree(release.root / 'SBU-Test')
    with pytest.raises(FileNotFoundError, match=r"\['SBU-Test'\] exists under .*/src;"):
        load_converter('sbu').convert(release.root, tmp_path / 'out')


def test_empty_image_folder_is_named(tmp_path):
    (tmp_path / 'Imgs').mkdir()
    (tmp_path / 'GT').mkdir()
    with pytest.raises(FileNotFoundError, match=f'no image .* selected in {tmp_path / "Imgs"}'):
        load_converter('chameleon').convert(tmp_path, tmp_path / 'out')


def test_unknown_trans10k_v2_colour_names_the_file_and_colour(tmp_path):
    release = RELEASES['trans10k_v2'](tmp_path / 'src')
    bad = release.root / 'validation/masks_12/5001_mask.png'
    rgb = np.array(Image.open(bad))
    rgb[:3, :3] = (1, 2, 3)
    Image.fromarray(rgb).save(bad)
    with pytest.raises(ValueError, match=r'5001_mask\.png: unknown colour\(s\) \(1, 2, 3\) \(9 px\)'):
        load_converter('trans10k_v2').convert(release.root, tmp_path / 'out')


def test_trans10k_v2_index_out_of_range_is_named(tmp_path):
    release = RELEASES['trans10k_v2'](tmp_path / 'src')
    bad = release.root / 'test/masks_12/6001_mask.png'
    label = np.array(Image.open(bad))
    label[0, 0] = 12
    Image.fromarray(label).save(bad)
    with pytest.raises(
        ValueError, match=r'6001_mask\.png: class indices \[12\] out of range; expected 0..11'
    ):
        load_converter('trans10k_v2').convert(release.root, tmp_path / 'out')


def test_unknown_trans10k_v1_colour_names_the_file(tmp_path):
    release = RELEASES['trans10k_v1'](tmp_path / 'src')
    bad = release.root / 'train/masks/2_mask.png'
    rgb = np.array(Image.open(bad))
    rgb[0, 0] = (128, 128, 128)
    Image.fromarray(rgb).save(bad)
    with pytest.raises(ValueError, match=r'2_mask\.png: unknown colour\(s\) \(128, 128, 128\) \(1 px\)'):
        load_converter('trans10k_v1').convert(release.root, tmp_path / 'out')


def test_mask_of_another_size_names_both_files(tmp_path):
    release = RELEASES['chameleon'](tmp_path / 'src')
    write_binary_mask(release.root / 'GT/animal-2.png', np.ones((SIZE[0] + 1, SIZE[1]), bool))
    with pytest.raises(
        ValueError, match=r'mask .*animal-2\.png is 56x41 \(WxH\) but its image .*animal-2\.jpg is 56x40'
    ):
        load_converter('chameleon').convert(release.root, tmp_path / 'out')


def test_pranet_splits_are_complete_and_checked(tmp_path):
    kvasir, clinicdb = load_converter('kvasir_seg'), load_converter('cvc_clinicdb')
    assert len(set(kvasir.PRANET_TEST)) == 100 and len(set(clinicdb.PRANET_TEST)) == 62
    assert set(clinicdb.PRANET_TEST) <= {str(n) for n in range(1, 613)}
    release = RELEASES['kvasir_seg'](tmp_path / 'Kvasir-SEG')  # 4 images: PraNet's test names are absent
    with pytest.raises(
        ValueError,
        match=r'100 test image\(s\) of the split are not in .*Kvasir-SEG: cju0u82z3cuma0835wlxrnrjv',
    ):
        kvasir.convert(release.root, tmp_path / 'out')


def test_clinicdb_png_mirror_layout(tmp_path):
    root = tmp_path / 'CVC-ClinicDB'
    for name in ('1', '2'):
        write_image(root / 'PNG/Original' / f'{name}.png')
        write_binary_mask(root / 'PNG/Ground Truth' / f'{name}.png', blob(name))
    (tmp_path / 'test.txt').write_text('2\n')
    counts = load_converter('cvc_clinicdb').convert(root, tmp_path / 'out', test_list=tmp_path / 'test.txt')
    assert counts == {'train': 1, 'test': 1}
    np.testing.assert_array_equal(_read_label(tmp_path / 'out/ann_dir/test/2.png'), blob('2'))


def test_roads_author_layout(tmp_path):
    root = tmp_path / 'mass_roads'
    for split, part in (('train', 'train'), ('val', 'valid'), ('test', 'test')):
        write_image(root / part / 'sat' / f'{split}_1.tiff')
        write_binary_mask(root / part / 'map' / f'{split}_1.tif', blob(split))
    counts = load_converter('massachusetts_roads').convert(root, tmp_path / 'out')
    assert counts == {'train': 1, 'val': 1, 'test': 1}
    np.testing.assert_array_equal(_read_label(tmp_path / 'out/ann_dir/val/val_1.png'), blob('val'))


def test_files_that_are_not_release_images_are_skipped(tmp_path):
    release = RELEASES['camo'](tmp_path / 'src')
    write_image(release.root / 'Images/Test/preview.png')  # a .png next to CAMO's .jpg images
    (release.root / 'Images/Test/Thumbs.db').write_bytes(b'')
    assert load_converter('camo').convert(release.root, tmp_path / 'out') == {'train': 2, 'test': 1}


@pytest.mark.parametrize(
    'values, expected',
    [((0, 255), (0, 1)), ((3, 250), (0, 1)), ((127, 128), (0, 1)), ((0, 0), (0, 0))],
)
def test_binarize_thresholds_at_128(values, expected):
    mask = np.array([values], np.uint8)
    np.testing.assert_array_equal(converters.binarize_mask(mask), np.array([expected], np.uint8))


_SOD_CONVERTERS = ('cod10k', 'camo', 'chameleon', 'kvasir_seg', 'cvc_clinicdb')
_OTHER_BINARY_CONVERTERS = ('sbu', 'istd', 'isic2017', 'leaf_disease', 'massachusetts_roads')


@pytest.mark.parametrize('name', _SOD_CONVERTERS + _OTHER_BINARY_CONVERTERS)
def test_binary_converters_default_threshold_follows_each_fields_convention(tmp_path, monkeypatch, name):
    """Camouflage and polyp evaluation counts GT > 128 as foreground; the others split 0/255 at 128."""
    release = RELEASES[name](tmp_path / 'src')
    grey = np.full(SIZE, 128, np.uint8)
    grey[:, SIZE[1] // 2 :] = 129  # left half exactly 128, right half 129
    monkeypatch.setattr(converters, 'load_mask', lambda *args, **kwargs: grey.copy())
    expected = np.ones(SIZE, np.uint8)
    if name in _SOD_CONVERTERS:
        expected[:, : SIZE[1] // 2] = 0
    tool = load_converter(name)
    tool.convert(release.root, tmp_path / 'api', **release.kwargs)  # the function's default
    options = [f'--{key.replace("_", "-")}={value}' for key, value in release.kwargs.items()]
    assert tool.main([str(release.root), '-o', str(tmp_path / 'cli'), *options]) == 0  # the CLI's default
    for out in ('api', 'cli'):
        label = _read_label(next((tmp_path / out / 'ann_dir').glob('*/*.png')))  # CHAMELEON: test only
        np.testing.assert_array_equal(label, expected, err_msg=f'{name} via {out}')


def test_binarize_colour_masks_use_any_channel():
    red = np.zeros((1, 2, 3), np.uint8)
    red[0, 1, 0] = 255
    np.testing.assert_array_equal(converters.binarize_mask(red), [[0, 1]])


def test_binarize_refuses_masks_already_0_1():
    with pytest.raises(ValueError, match=r'm\.png holds only the values 0 and 1.*LoadAnnotations'):
        converters.binarize_mask(np.array([[0, 1]], np.uint8), name='m.png')


@pytest.mark.parametrize('threshold', [0, 256, 127.5, True])
def test_binarize_rejects_bad_thresholds(threshold):
    with pytest.raises(ValueError, match=r'threshold must be an int in \[1, 255\]'):
        converters.binarize_mask(np.zeros((1, 1), np.uint8), threshold)


def test_read_names_from_a_file_or_a_folder(tmp_path):
    (tmp_path / 'list.txt').write_text('# comment\na.jpg\n\nb\nc.name.png  # trailing\n')
    assert converters.read_names(tmp_path / 'list.txt') == {'a', 'b', 'c.name'}
    (tmp_path / 'dir').mkdir()
    (tmp_path / 'dir/x.png').write_bytes(b'')
    assert converters.read_names(tmp_path / 'dir') == {'x'}
    with pytest.raises(FileNotFoundError, match='missing.txt does not exist'):
        converters.read_names(tmp_path / 'missing.txt')


def test_duplicate_names_in_a_split_are_refused(tmp_path):
    a = converters.Sample('1', tmp_path / 'easy/1.jpg', tmp_path / 'easy/1_mask.png')
    b = converters.Sample('1', tmp_path / 'hard/1.jpg', tmp_path / 'hard/1_mask.png')
    with pytest.raises(
        ValueError,
        match=r"two images of split 'test' would both be written as 1: .*easy/1\.jpg and .*hard/1\.jpg",
    ):
        converters.convert_splits({'test': [a, b]}, tmp_path / 'out', converters.read_binary_mask, '.jpg')
