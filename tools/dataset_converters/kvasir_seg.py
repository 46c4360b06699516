"""Convert Kvasir-SEG (polyps) to mmseg's layout, with PraNet's train/test split.

Release: Kvasir-SEG (Jha et al., MMM 2020), ``kvasir-seg.zip`` from simula.no::

    Kvasir-SEG/
      images/cju0qkwl35piu0993l0dewei2.jpg ...   1000 images
      masks/cju0qkwl35piu0993l0dewei2.jpg ...    JPEG masks, near 0/255
      kavsir_bboxes.json                         (not used)

Split: the release has none. Polyp papers since PraNet (Fan et al., MICCAI
2020) test on 100 Kvasir images and train on the other 900 (together with 550
CVC-ClinicDB images, see cvc_clinicdb.py). The 100 test names below are those of
PraNet's ``TestDataset/Kvasir`` (the file names of PraNet's released
predictions); ``--test-list`` replaces them with a text file of names or a
folder whose file names are the test images. Output (masks: 0 background,
1 polyp)::

    OUT_DIR/img_dir/{train,test}/<name>.jpg    900 / 100
    OUT_DIR/ann_dir/{train,test}/<name>.png

Usage::

    python tools/dataset_converters/kvasir_seg.py /path/to/Kvasir-SEG [-o data/kvasir_seg]
"""

from __future__ import annotations

import sys
from functools import partial
from pathlib import Path

from mmseg_sam.datasets.converters import (
    SOD_GT_THRESHOLD,
    convert_splits,
    converter_parser,
    find_dir,
    pair_samples,
    read_binary_mask,
    read_names,
    split_by_names,
)

PRANET_TEST = (
    'cju0u82z3cuma0835wlxrnrjv', 'cju15wdt3zla10801odjiw7sy', 'cju16ach3m1da0993r1dq3sn2',
    'cju16whaj0e7n0855q7b6cjkm', 'cju17z0qongpa0993de4boim4', 'cju1amqw6p8pw0993d9gc5crl',
    'cju1bm8063nmh07996rsjjemq', 'cju1c3218411b08014g9f6gig', 'cju1cbokpuiw70988j4lq1fpi',
    'cju1cj3f0qi5n0993ut8f49rj', 'cju1cqc7n4gpy0855jt246k68', 'cju1ddr6p4k5z08780uuuzit2',
    'cju1f8w0t65en0799m9oacq0q', 'cju1h89h6xbnx08352k2790o9', 'cju1hp9i2xu8e0988u2dazk7m',
    'cju2hfqnmhisa0993gpleeldd', 'cju2hjrqcvi2j0801bx1i6gxg', 'cju2hos57llxm08359g92p6jj',
    'cju2hqt33lmra0988fr5ijv8j', 'cju2lberzkdzm09938cl40pog', 'cju2mh8t6p07008350e01tx2a',
    'cju2nnqrqzp580855z8mhzgd6', 'cju2np2k9zi3v079992ypxqkn', 'cju2omjpeqj5a0988pjdlb8l1',
    'cju2osuru0ki00855txo0n3uu', 'cju2pag1f0s4r0878h52uq83s', 'cju2rga4psq9n09881z519xx0',
    'cju2rmd2rsw9g09888hh1efu0', 'cju2rqo702wpx0855fn7d5cxh', 'cju2top2ruxxy0988p1svx36g',
    'cju2wve9v7esz0878mxsdcy04', 'cju2y40d8ulqo0993q0adtgtb', 'cju2yi9tz8vky0801yqip0xyl',
    'cju2yo1j1v0qz09934o0e683p', 'cju2yv4imv6cz099314jveiib', 'cju2zp89k9q1g0855k1x0f1xa',
    'cju2zwg05a0oy0801yr73ig7g', 'cju30ajhw09sx0988qyahx9s8', 'cju30gxjq0djk0988jytm49rs',
    'cju30j1rgadut0801vuyrsnt8', 'cju31w6goazci0799n014ly1q', 'cju32srle1xfq083575i3fl75',
    'cju34m7h536wq0988xz7gx79v', 'cju34xspwzenf0993cyzajv9n', 'cju3tp94kfstl08181awh6z49',
    'cju3uhb79gcgr0871orbrbi3x', 'cju3v11mrgwwb0755u242ygye', 'cju3x5u2tiihx0818914gzxy1',
    'cju3xga12iixg0817dijbvjxw', 'cju3ya7goj6at0818v2l5ay7f', 'cju3ykamdj9u208503pygyuc8',
    'cju40m0rjkpw80871z6n6yg1u', 'cju42qet0lsq90871e50xbnuv', 'cju42wamblrqn098798r2yyok',
    'cju43jcqim2cp08172dvjvyui', 'cju45rj7ln8980850a7821fov', 'cju45ty6zn9oz0850qy4qnck1',
    'cju45v0pungu40871acnwtmu5', 'cju5cky5xb0ay0801oxet697t', 'cju5clr68b48r0755cmuvponm',
    'cju5hi52odyf90817prvcwg45', 'cju5hyi9yegob0755ho3do8en', 'cju5k3j3uf6de0817hszzfr7n',
    'cju5o4pk9h0720755lgp9jq8m', 'cju5wrrs0m2af0818vmnajbtw', 'cju5x00l6m5j608503k78ptee',
    'cju5xjn5mm78b09871spyqhhr', 'cju5xkwzxmf0z0818gk4xabdm', 'cju5xq3tdm9fn0987pbedxdg5',
    'cju5y4hgqmk0i08180rjhbwvp', 'cju5yeqiwmkgl0801fzv2douc', 'cju6us80mv1b50871ebyq2wxa',
    'cju6uy20suzbl0987rzuhz7z9', 'cju6v1m1xv07w09870ah3njy1', 'cju6vifjlv55z0987un6y4zdo',
    'cju6vrs1ov8cr098788h8gs6j', 'cju6x0yqbvxqt0755dhxislgb', 'cju7ajnbo1gvm098749rdouk0',
    'cju7awzmu1ncs0871hziy65zx', 'cju7bd1qu1mx409877xjxibox', 'cju7bgnvb1sf808717qa799ir',
    'cju7crgxa28550755wbsgqkel', 'cju7da88w2eod0755wejzynvt', 'cju7ddtz729960801uazp1knc',
    'cju7do8c72dbo0801vxfzxdc4', 'cju7dymur2od30755eg8yv2ht', 'cju7ecl9i2i060987xawjp4l0',
    'cju7fbndk2sl608015ravktum', 'cju7fcgbe2z3p07550vaflqdb', 'cju7fpfzq2wyf0818xxd1oziv',
    'cju84hibuktj80871u519o71q', 'cju88cddensj00987788yotmg', 'cju88t4fvokxf07558ymyh281',
    'cju88vx2uoocy075531lc63n3', 'cju8alhigqn2h0801zksudldd', 'cju8aqq8uqmoq0987hphto9gg',
    'cju8bk8oirjhw0817hgkua2w8', 'cju8c2rqzs5t80850d0zky5dy', 'cju8d4jgatgpj0871q2ophhkm',
    'cju8dqkrqu83i0818ev74qpxq',
)  # fmt: skip


def convert(
    src: str | Path,
    out_dir: str | Path,
    test_list: str | Path | None = None,
    threshold: int = SOD_GT_THRESHOLD,
    nproc: int = 1,
    overwrite: bool = False,
) -> dict[str, int]:
    """Convert Kvasir-SEG at ``src`` into ``out_dir``; returns the number of images per split.

    Args:
        src: Root of the release.
        out_dir: Output root.
        test_list: Text file or folder naming the test images; ``None`` uses
            PraNet's split.
        threshold: Mask values >= this are polyp (default 129: the field's ``GT > 128``).
        nproc: Worker processes.
        overwrite: Replace files in non-empty output folders.
    """
    src = Path(src)
    samples = pair_samples(
        find_dir(src, 'images'),
        find_dir(src, 'masks'),
        image_extensions=('.jpg',),
        mask_extensions=('.jpg', '.png'),
    )
    test_names = PRANET_TEST if test_list is None else read_names(test_list)
    train, test = split_by_names(samples, test_names, src)
    mask_fn = partial(read_binary_mask, threshold=threshold)
    return convert_splits({'train': train, 'test': test}, out_dir, mask_fn, '.jpg', nproc, overwrite)


def main(argv: list[str] | None = None) -> int:
    parser = converter_parser(__doc__, 'data/kvasir_seg', threshold=SOD_GT_THRESHOLD)
    parser.add_argument('--test-list', help="file or folder naming the test images (default: PraNet's 100)")
    args = parser.parse_args(argv)
    convert(args.src, args.out_dir, args.test_list, args.threshold, args.nproc, args.overwrite)
    return 0


if __name__ == '__main__':
    sys.exit(main())
