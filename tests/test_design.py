import pytest

from llm_energy.measure.design import Cell, SweepDesign, design_from_lists, parse_int_list
from llm_energy.errors import UserError


def test_grid_is_full_factorial_with_stable_ids():
    d = SweepDesign.grid([8, 16, 32], [8, 64], [1, 4], repeats=2, warmups=1, seed=3)
    assert len(d.cells) == 3 * 2 * 2
    assert {c.cell_id for c in d.cells} == {f"i{i}-o{o}-b{b}" for i in (8, 16, 32) for o in (8, 64) for b in (1, 4)}
    trials = d.trials()
    assert len(trials) == d.n_trials == 12 * 3
    keys = [t.key for t in trials]
    assert len(set(keys)) == len(keys)
    # same seed, same order; other seed, other order
    assert [t.key for t in SweepDesign.grid([8, 16, 32], [8, 64], [1, 4], 2, 1, 3).trials()] == keys
    assert [t.key for t in SweepDesign.grid([8, 16, 32], [8, 64], [1, 4], 2, 1, 4).trials()] != keys


def test_run_order_warmups_first_then_shuffled_passes():
    d = SweepDesign.grid([8, 16, 32, 64], [8, 16, 32, 64], repeats=3, warmups=1, seed=0)
    trials = d.trials()
    n = len(d.cells)
    assert all(t.warmup for t in trials[:n]) and not any(t.warmup for t in trials[n:])
    passes = [trials[k * n:(k + 1) * n] for k in range(4)]
    for k, p in enumerate(passes):
        assert {t.repeat for t in p} == {k}
        assert {t.cell for t in p} == set(d.cells)
    orders = [[t.cell for t in p] for p in passes]
    assert len({tuple(o) for o in orders}) == 4  # each pass shuffled differently
    # not sorted by a factor
    assert [c.tin for c in orders[1]] != sorted(c.tin for c in orders[1])


def test_one_factor_and_random_log():
    d = SweepDesign.one_factor([8, 64, 512], [8, 128], [1, 2], base_tin=8, base_tout=8, base_batch=1)
    assert Cell(512, 8, 1) in d.cells and Cell(8, 128, 1) in d.cells and Cell(8, 8, 2) in d.cells
    assert Cell(512, 128, 1) not in d.cells
    r = SweepDesign.random_log(20, (8, 2048), (8, 1024), seed=1)
    assert 15 <= len(r.cells) <= 20
    assert all(8 <= c.tin <= 2048 and 8 <= c.tout <= 1024 for c in r.cells)
    # Latin hypercube: one point per log2-stratum pair of the tin range
    import math

    strata = {int(20 * (math.log(c.tin) - math.log(8)) / (math.log(2048) - math.log(8))) for c in r.cells}
    assert len(strata) >= 14
    assert SweepDesign.from_dict(r.to_dict()) == r


def test_parse_int_list():
    assert parse_int_list("8,16,32", name="tin") == [8, 16, 32]
    assert parse_int_list("8..2048", name="tin") == [8, 16, 32, 64, 128, 256, 512, 1024, 2048]
    for bad in ("0", "-8", "a,b", "8,,16", "16..8", "1.5"):
        with pytest.raises(UserError, match="--tin"):
            parse_int_list(bad, name="tin")


def test_design_validation():
    with pytest.raises(UserError, match="repeats"):
        SweepDesign.grid([8], [8], repeats=0)
    with pytest.raises(UserError, match="design"):
        design_from_lists("latin", [8], [8], [1], repeats=1, warmups=0, seed=0)
