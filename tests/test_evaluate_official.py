"""scripts/evaluate_official.py: official-format checkpoints of gUNet-T and gUNet-S with random
weights, found under their published names, tested through gunet_arch/test.py on a tiny SOTS-indoor
LMDB (made by the project's own preparation code) and a tiny SOTS-outdoor in the official IN/GT
layout; the printed table must carry the means of the CSVs the tests wrote, beside the paper's."""
import csv
import os
import re

import pytest
import torch
from conftest import load_script
from fixtures_dehaze import make_official_rearranged, make_sots_indoor

from gunet_arch.archs import GUNet
from gunet_arch.data.lmdb_writer import prepare_lmdb
from gunet_arch.tools.evaluate_official import PAPER, loose_checkpoints, plan

evaluate_official = load_script('evaluate_official')


def save_official(path, variant, seed=0):
    """What the official training saves: a DDP state dict under 'state_dict'."""
    torch.manual_seed(seed)
    sd = {'module.' + k: v for k, v in GUNet(variant=variant).state_dict().items()}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save({'state_dict': sd, 'cur_epoch': 1000}, path)


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    """datasets/SOTS-indoor/{hazy,clear}.lmdb and datasets/SOTS-outdoor/{IN,GT}; no Haze4K, no RS-Haze."""
    root = tmp_path_factory.mktemp('official')
    indoor = make_sots_indoor(str(root / 'raw'))
    prepare_lmdb(indoor.hazy_dir, indoor.clear_dir, str(root / 'datasets' / 'SOTS-indoor'), dataset='sots-indoor',
                 workers=1, progress=False, log=lambda *_: None)
    make_official_rearranged(str(root / 'raw'))
    os.rename(root / 'raw' / 'data' / 'ITS', root / 'datasets' / 'SOTS-outdoor')
    return root / 'datasets'


def mean_row(csv_path):
    """The CSV's means by metric name, and its number of image rows."""
    with open(csv_path, newline='') as f:
        header, *rows = csv.reader(f)
    images = [row for row in rows if row and row[0] != 'mean' and not row[0].startswith('#')]
    mean = next(row for row in rows if row and row[0] == 'mean')
    return {name: float(value) for name, value in zip(header[1:], mean[1:])}, len(images)


def test_official_checkpoints_are_tested_and_tabled_beside_the_paper(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    weights = tmp_path / 'saved_models'
    save_official(str(weights / 'reside-in' / 'gunet_t.pth'), 't')  # the official scripts' name
    save_official(str(weights / 'reside-out' / 'gunet-s.pth'), 's')  # the official README's name
    save_official(str(weights / 'haze4k' / 'gunet_t.pth'), 't')  # no Haze4K-test data
    results = tmp_path / 'results'

    status = evaluate_official.main(['--weights-dir', str(weights), '--data-root', str(data_root),
                                     '--results-root', str(results)])
    out = capsys.readouterr().out
    assert status == 0, out

    rows = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip('|').split('|')]
        if line.startswith('| gUNet-'):
            rows[cells[0], cells[1]] = cells
    assert set(rows) == {('gUNet-T', 'SOTS-indoor'), ('gUNet-S', 'SOTS-outdoor')}, out
    for (model, set_name), cells in rows.items():
        variant, key = model[-1].lower(), {'SOTS-indoor': 'its', 'SOTS-outdoor': 'ots'}[set_name]
        suffix = set_name.lower().replace('-', '_')
        means, images = mean_row(results / f'test_official_gunet_{variant}_{suffix}' / f'{set_name}_metrics.csv')
        psnr, ssim = means['psnr'], means['ssim']
        paper_psnr, paper_ssim = PAPER[variant][key]
        assert cells[2:] == [str(images), cells[3], f'{psnr:.2f} / {ssim:.4f}', f'{paper_psnr:.2f} / {paper_ssim:.3f}',
                             f'{psnr - paper_psnr:+.2f} / {ssim - paper_ssim:+.4f}'], cells
        assert images == 4
    assert rows['gUNet-T', 'SOTS-indoor'][3] == os.path.join('reside-in', 'gunet_t.pth')
    assert rows['gUNet-S', 'SOTS-outdoor'][3] == os.path.join('reside-out', 'gunet-s.pth')
    assert "| paper |" in out and '37.99 / 0.993' in out and '35.17 / 0.984' in out

    # BasicSR's test pipeline loaded the official file as it is.
    log_dir = results / 'test_official_gunet_t_sots_indoor'
    log = next(log_dir.glob('test_test_official_gunet_t_sots_indoor_*.log')).read_text()
    assert f'{weights / "reside-in" / "gunet_t.pth"}, with param key: [state_dict]' in log
    assert 'Model [GUNetModel] is created.' in log

    not_run = out.split('not run:')[1]
    assert f'missing checkpoints in {weights / "reside-in"}: gunet_s.pth gunet_b.pth gunet_d.pth' in not_run
    assert f'missing checkpoints in {weights / "reside-out"}: gunet_t.pth gunet_b.pth gunet_d.pth' in not_run
    assert f'missing checkpoints in {weights / "rshaze"}: gunet_t.pth gunet_s.pth gunet_b.pth gunet_d.pth' in not_run
    assert re.search(r'missing dataset Haze4K-test: no .*Haze4K-test/\{hazy,clear\}\.lmdb .*; skipped gUNet-T',
                     not_run), not_run


def test_a_checkpoint_of_another_variant_fails_by_name(data_root, tmp_path, capsys):
    weights = tmp_path / 'saved_models'
    save_official(str(weights / 'reside-in' / 'gunet_b.pth'), 't')
    status = evaluate_official.main(['--weights-dir', str(weights), '--data-root', str(data_root),
                                     '--results-root', str(tmp_path / 'results'), '--variants', 'b'])
    out = capsys.readouterr().out
    assert status == 1
    assert f'failed: gUNet-B ({weights / "reside-in" / "gunet_b.pth"})' in out and 'missing key' in out
    assert not (tmp_path / 'results').exists()  # refused before anything ran


def test_nothing_to_evaluate_is_an_error_that_says_what_is_missing(data_root, tmp_path, capsys):
    weights = tmp_path / 'saved_models'
    weights.mkdir()
    assert evaluate_official.main(['--weights-dir', str(weights), '--data-root', str(data_root)]) == 2
    captured = capsys.readouterr()
    assert 'error: nothing to evaluate' in captured.err
    assert f'missing checkpoints in {weights / "reside-in"}: gunet_t.pth gunet_s.pth gunet_b.pth gunet_d.pth' in (
        captured.out)

    save_official(str(weights / 'reside-in' / 'gunet_t.pth'), 't')  # a checkpoint, but no data for it
    assert evaluate_official.main(['--weights-dir', str(weights), '--data-root', str(tmp_path / 'none')]) == 2
    captured = capsys.readouterr()
    assert 'error: nothing to evaluate' in captured.err and 'missing dataset SOTS-indoor' in captured.out
    # An experiment folder given itself stands for its own test set only.
    assert evaluate_official.main(['--weights-dir', str(weights / 'reside-in'), '--data-root', str(tmp_path)]) == 2
    out = capsys.readouterr().out
    assert f'missing checkpoints in {weights / "reside-in"}: gunet_s.pth gunet_b.pth gunet_d.pth' in out
    assert 'missing dataset SOTS-indoor' in out and 'reside-out' not in out


def test_checkpoints_directly_in_the_weights_dir(data_root, tmp_path):
    """An experiment folder itself (saved_models/reside-in) is found by its name; loose files
    elsewhere need --exp, and are listed until then."""
    exp_dir = tmp_path / 'reside-in'
    save_official(str(exp_dir / 'gunet-t.pth'), 't')
    jobs, missing = plan(str(exp_dir), str(data_root), ['t', 's'], ['its'], loose_exp='reside-in')
    assert [(j.variant, j.checkpoint) for j in jobs] == [('t', str(exp_dir / 'gunet-t.pth'))]
    assert missing == [f'missing checkpoint in {exp_dir}: gunet_s.pth']

    loose = tmp_path / 'downloads'
    save_official(str(loose / 'gunet_t.pth'), 't')
    assert loose_checkpoints(str(loose), None) == [str(loose / 'gunet_t.pth')]
    assert plan(str(loose), str(data_root), ['t'], ['its'])[0] == []
    jobs, _ = plan(str(loose), str(data_root), ['t'], ['its'], loose_exp='reside-in')
    assert [j.checkpoint for j in jobs] == [str(loose / 'gunet_t.pth')]
