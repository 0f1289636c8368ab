"""Hazy-to-clear name rules of the public dehazing sets."""
import os

import pytest
from fixtures_dehaze import MAKERS

from gunet_arch.data.pairing import PairingError, clear_stem_of, detect_rule, pair_folders, stem


@pytest.mark.parametrize('hazy, clear_stem', [
    ('1_1_0.90179.png', '1'),  # ITS
    ('1400_1.png', '1400'),  # SOTS indoor
    ('0005_0.8_0.04.jpg', '0005'),  # OTS
    ('0001_0.8_0.2.jpg', '0001'),  # SOTS outdoor
    ('1_0.89_1.56.png', '1'),  # Haze4K
])
def test_prefix_rule_of_each_set(hazy, clear_stem):
    assert clear_stem_of(hazy, 'prefix') == clear_stem


@pytest.mark.parametrize('hazy, clear_stem', [
    ('01_hazy.png', '01_GT'),  # NH-HAZE, Dense-HAZE
    ('41_outdoor_hazy.jpg', '41_outdoor_GT'),  # O-HAZE
    ('31_indoor_HAZY.JPG', '31_indoor_GT'),  # I-HAZE; the tag in any case
])
def test_hazy_gt_rule_of_each_real_set(hazy, clear_stem):
    assert clear_stem_of(hazy, 'hazy_gt') == clear_stem


def test_hazy_gt_rule_refuses_other_names():
    for name in ('01_GT.png', '01.png', 'hazy.png'):
        with pytest.raises(PairingError, match=f'{name} is not a hazy image name'):
            clear_stem_of(name, 'hazy_gt')


def test_names_are_split_at_the_last_dot_only():
    assert stem('1_1_0.90179.png') == '1_1_0.90179'
    assert clear_stem_of('1_1_0.90179.png', 'same_name') == '1_1_0.90179'


def test_detect_rule():
    assert detect_rule(['1_1_0.9.png'], ['1.png']) == 'prefix'
    assert detect_rule(['a_0.5.png', 'b.png'], ['a_0.5.png', 'b.png']) == 'same_name'
    assert detect_rule(['01_hazy.png'], ['01_GT.png']) == 'hazy_gt'
    # NH-HAZE's one folder, given as both: the tags decide, not the (trivially equal) names.
    assert detect_rule(['01_GT.png', '01_hazy.png'], ['01_GT.png', '01_hazy.png']) == 'hazy_gt'
    assert detect_rule(['01_hazy.png'], ['01_hazy.png']) == 'same_name'  # an IN/GT rearrangement


@pytest.mark.parametrize('dataset', sorted(MAKERS))
def test_every_layout_pairs_as_distributed(tmp_path, dataset):
    fixture = MAKERS[dataset](str(tmp_path))
    pairs, _ = pair_folders(fixture.hazy_dir, fixture.clear_dir)
    got = [(os.path.basename(p.hazy_path), os.path.basename(p.clear_path)) for p in pairs]
    assert got == [(p.hazy, p.clear) for p in fixture.pairs]


def test_sots_outdoor_pairs_jpg_hazy_with_png_clear(tmp_path):
    fixture = MAKERS['sots-outdoor'](str(tmp_path))
    pairs, rule = pair_folders(fixture.hazy_dir, fixture.clear_dir)
    assert rule == 'prefix'
    assert [os.path.basename(p.clear_path) for p in pairs] == ['0001.png', '0002.png']


def test_unpaired_hazy_images_are_listed_with_counts(tmp_path):
    fixture = MAKERS['its'](str(tmp_path))
    for name in ('7_1_0.5.png', '8_2_0.25.png'):
        open(os.path.join(fixture.hazy_dir, name), 'wb').close()
    with pytest.raises(PairingError) as err:
        pair_folders(fixture.hazy_dir, fixture.clear_dir, 'prefix')
    message = str(err.value)
    assert '2 of 8 hazy images' in message and '7_1_0.5.png' in message and '8_2_0.25.png' in message

    logged = []
    pairs, _ = pair_folders(fixture.hazy_dir, fixture.clear_dir, 'prefix', skip_unpaired=True,
                            log=logged.append)
    assert len(pairs) == 6 and '7_1_0.5.png' in logged[0]


def test_hidden_files_are_not_images(tmp_path):
    fixture = MAKERS['its'](str(tmp_path))
    open(os.path.join(fixture.hazy_dir, '._1_1_0.11179.png'), 'wb').close()
    pairs, _ = pair_folders(fixture.hazy_dir, fixture.clear_dir)
    assert len(pairs) == 6


def test_empty_and_missing_folders(tmp_path):
    empty = tmp_path / 'empty'
    empty.mkdir()
    (empty / 'notes.txt').write_text('not an image')
    with pytest.raises(PairingError, match='No images.*empty'):
        pair_folders(str(empty), str(empty))
    with pytest.raises(PairingError, match='does not exist.*nowhere'):
        pair_folders(str(tmp_path / 'nowhere'), str(empty))


def test_two_clear_files_with_one_stem_are_ambiguous(tmp_path):
    fixture = MAKERS['its'](str(tmp_path))
    open(os.path.join(fixture.clear_dir, '1.jpg'), 'wb').close()
    with pytest.raises(PairingError, match=r"share the name '1'"):
        pair_folders(fixture.hazy_dir, fixture.clear_dir)


def test_one_name_in_two_hazy_folders_is_an_error(tmp_path):
    fixture = MAKERS['ots'](str(tmp_path))
    part1, part2 = fixture.hazy_dir
    name = sorted(os.listdir(part1))[0]
    open(os.path.join(part2, name), 'wb').close()
    with pytest.raises(PairingError, match='same image name is in two folders'):
        pair_folders(fixture.hazy_dir, fixture.clear_dir)


def test_one_folder_as_both_pairs_only_by_tags(tmp_path):
    """Under the name rules a file in both lists would be its own clear image: refused by name."""
    fixture = MAKERS['rshaze'](str(tmp_path))
    for rule in (None, 'same_name', 'prefix'):
        with pytest.raises(PairingError, match=r"both hazy and clear under the '\w+' rule.*0001_0.5.png"):
            pair_folders(fixture.hazy_dir, fixture.hazy_dir, rule)
