"""bench/dial.py: the rule that picks the detail setting on training photos."""
import pytest
import torch

from hitok.bench import dial
from hitok.bench.artefacts import BLOCK_FLAG, FLAG, FLAT_FLAG


class _Model:
    def restore(self, x, texture):
        return torch.full((1,), texture)


def _rows(bad_at: dict[float, str]):
    """A scorer whose rows flag the check named in bad_at[t] (on the compressed track only)."""
    def score(net, pairs):
        t = round(float(net(torch.zeros(1))), 3)
        row = {"psnr_y": 30.0, "haarpsi": 0.8, "niqe": 7.0, "periodic": 2.0, "blocky": 1.0, "flat": 0.5}
        if pairs == "compressed" and t in bad_at:
            row[bad_at[t]] = {"periodic": FLAG, "blocky": BLOCK_FLAG, "flat": FLAT_FLAG}[bad_at[t]] + 0.1
        return row
    return score


@pytest.mark.parametrize("bad_at, picked", [
    ({0.8: "flat", 0.9: "flat", 1.0: "periodic"}, 0.7),
    ({}, 1.0),
    ({0.5: "blocky"}, None),
    ({0.6: "periodic"}, 0.5),  # 0.7 passes again, but the dial is not clean up to it
])
def test_the_largest_setting_with_every_setting_below_it_clean(monkeypatch, bad_at, picked):
    monkeypatch.setattr(dial, "score_restorer", _rows(bad_at))
    logged = []
    settings = [1.0, 0.5, 0.6, 0.7, 0.8, 0.9]  # any order
    assert dial.pick_setting(_Model(), {"clean": "clean", "compressed": "compressed"}, settings,
                             log=logged.append) == picked
    assert len(logged) == 6 and sum("FLAGGED" in m for m in logged) == len(bad_at)


def test_flat_none_means_no_flat_area_not_a_flag():
    row = {"periodic": 2.0, "blocky": 1.0, "flat": None}
    assert not dial.flagged(row) and dial.flagged(row | {"flat": FLAT_FLAG + 0.1})
    assert not dial.flagged(row | {"flat": FLAT_FLAG, "periodic": FLAG})  # at the flag is not above it, as the eval
