"""Tests for lrlab.suggest: expected indices are worked out by hand in the comments."""

import math

import numpy as np
import pytest

from lrlab.finder.flags import climb_start, edge_flag
from lrlab.finder.rules import (
    RULES,
    SUGGESTION_SCALE,
    register_rule,
    rule_curves,
    suggest,
    suggest_bottom,
    suggest_descent,
    suggest_lrlab,
    suggest_minimum,
    suggest_minimum_or_valley,
    suggest_on_curves,
    suggest_slide,
    suggest_steep,
    suggest_valley,
    trim,
)
from lrlab.finder.smoothing import (
    ema_smooth,
    finite_prefix,
    lightning_smooth,
    torch_lr_finder_smooth,
    zero_lag_smooth,
)

# 30 raw points: n // 10 = 3, so trim keeps raw indices 3..24 (22 points).
N_RAW = 30
LRS30 = np.logspace(-6, 0, N_RAW)


def _curve30(trimmed: list[float], head: list[float], tail: list[float]) -> np.ndarray:
    """Assemble a 30-point raw curve from 3 head points, 22 kept points and 5 tail points."""
    assert len(head) == 3 and len(trimmed) == 22 and len(tail) == 5
    return np.array(head + trimmed + tail, dtype=float)


# ---------------------------------------------------------------- smoothing


def test_registered_rule_reaches_suggest_all():
    """A rule registered once is applied by suggest("all") and accepted by name."""
    lrs, losses = np.geomspace(1e-5, 1, 40), np.linspace(2.0, 1.0, 40)
    register_rule("first_point", lambda lr, loss: float(lr[0]))
    try:
        assert suggest(lrs, losses, "all")["first_point"] == lrs[40 // 10]
        assert suggest(lrs, losses, "first_point") == lrs[4]
    finally:
        del RULES["first_point"]
    fastai, own = ["valley", "steep", "minimum", "slide"], ["descent", "bottom", "minimum_or_valley", "lrlab"]
    others = ["lightning", "torch_lr_finder"]  # those tools' steepest-gradient suggestions
    assert list(RULES) == fastai + own + others
    with pytest.raises(ValueError, match="all"):
        register_rule("all", lambda lr, loss: 1.0)


def test_ema_first_point_is_first_loss_exactly():
    losses = [0.3, 0.7, 1.1]
    assert ema_smooth(losses)[0] == 0.3
    assert zero_lag_smooth([0.3])[0] == 0.3


def test_ema_hand_values_beta_half():
    # weights 1, 2, 4 (newest heaviest): 1, (1+6)/3, (1+6+20)/7
    out = ema_smooth([1.0, 3.0, 5.0], beta=0.5)
    np.testing.assert_allclose(out, [1.0, 7.0 / 3.0, 27.0 / 7.0], rtol=1e-15)


def test_ema_matches_fastai_recursion():
    losses = np.sin(np.arange(60) * 0.37) + np.arange(60) * 0.05
    avg, expected = 0.0, []
    for i, loss in enumerate(losses):
        avg = 0.98 * avg + (1 - 0.98) * loss
        expected.append(avg / (1 - 0.98 ** (i + 1)))
    np.testing.assert_allclose(ema_smooth(losses), expected, rtol=1e-12, atol=1e-14)


def test_ema_constant_and_empty():
    np.testing.assert_allclose(ema_smooth([2.5] * 10), [2.5] * 10, rtol=1e-15)
    assert ema_smooth([]).shape == (0,)
    assert zero_lag_smooth([]).shape == (0,)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_ema_non_finite_poisons_rest(bad):
    out = ema_smooth([1.0, 3.0, bad, 4.0, 5.0], beta=0.5)
    np.testing.assert_allclose(out[:2], [1.0, 7.0 / 3.0])
    assert np.isnan(out[2:]).all()


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_zero_lag_non_finite_poisons_rest(bad):
    out = zero_lag_smooth([1.0, 2.0, 3.0, bad, 4.0], beta=0.5)
    assert np.isfinite(out[:3]).all()
    assert np.isnan(out[3:]).all()
    np.testing.assert_allclose(out[:3], zero_lag_smooth([1.0, 2.0, 3.0], beta=0.5))


@pytest.mark.parametrize("beta", [1.0, -0.1, 1.5])
def test_bad_beta(beta):
    with pytest.raises(ValueError, match="beta"):
        ema_smooth([1.0, 2.0], beta=beta)
    with pytest.raises(ValueError, match="beta"):
        zero_lag_smooth([1.0, 2.0], beta=beta)


def test_zero_lag_keeps_symmetric_dip_causal_ema_shifts_it():
    # noise-free parabola in log10(lr), minimum at the middle point (index 50 of 101)
    log_lr = np.linspace(-7.0, 1.0, 101)
    losses = (log_lr + 3.0) ** 2
    assert int(np.argmin(losses)) == 50
    assert int(np.argmin(zero_lag_smooth(losses))) == 50
    assert int(np.argmin(ema_smooth(losses))) > 55


def test_zero_lag_short_curves_and_reversal():
    assert zero_lag_smooth([4.0])[0] == 4.0
    np.testing.assert_allclose(zero_lag_smooth([2.0] * 3), [2.0] * 3, rtol=1e-15)
    v = [3.0, 2.0, 1.0, 0.0, 1.0, 2.0, 3.0]
    assert int(np.argmin(zero_lag_smooth(v))) == 3
    assert int(np.argmin(ema_smooth(v))) > 3
    x = np.array([5.0, 1.0, 4.0, 2.0, 8.0])
    np.testing.assert_allclose(zero_lag_smooth(x[::-1]), zero_lag_smooth(x)[::-1], rtol=1e-14)


def test_finite_prefix():
    assert finite_prefix([1.0, 2.0, np.nan, 3.0]) == 2
    assert finite_prefix([1.0, -np.inf]) == 1
    assert finite_prefix([np.inf]) == 0
    assert finite_prefix([]) == 0
    assert finite_prefix([1.0, 2.0, 3.0]) == 3


# ---------------------------------------------------------------- trimming


@pytest.mark.parametrize(
    "n, start, stop",
    [(30, 3, 25), (100, 10, 95), (9, 0, 4), (19, 1, 14), (20, 2, 15), (6, 0, 1), (5, 0, 0), (3, 0, 0)],
)
def test_trim_slices_n_over_10_and_last_5(n, start, stop):
    lrs = np.arange(n, dtype=float) + 1.0
    losses = 100.0 + np.arange(n, dtype=float)
    t_lrs, t_losses = trim(lrs, losses)
    np.testing.assert_array_equal(t_lrs, lrs[start:stop])
    np.testing.assert_array_equal(t_losses, losses[start:stop])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_trim_cuts_at_first_non_finite(bad):
    lrs = np.arange(30, dtype=float) + 1.0
    losses = np.arange(30, dtype=float)
    losses[12] = bad
    losses[18] = bad
    t_lrs, t_losses = trim(lrs, losses)
    np.testing.assert_array_equal(t_lrs, lrs[3:12])  # raw 3..11
    np.testing.assert_array_equal(t_losses, losses[3:12])


def test_trim_ignores_non_finite_in_dropped_head_and_tail():
    lrs = np.arange(30, dtype=float) + 1.0
    losses = np.arange(30, dtype=float)
    losses[2] = np.nan  # dropped by n // 10 first, as in fastai
    losses[27] = np.inf  # dropped with the last 5
    t_lrs, _ = trim(lrs, losses)
    np.testing.assert_array_equal(t_lrs, lrs[3:25])


def test_trim_non_finite_first_kept_point_empties():
    losses = np.arange(30, dtype=float)
    losses[3] = np.nan
    t_lrs, t_losses = trim(LRS30, losses)
    assert t_lrs.size == 0 and t_losses.size == 0


def test_trim_length_mismatch():
    with pytest.raises(ValueError, match="same length"):
        trim([1.0, 2.0], [1.0])


# ---------------------------------------------------------------- minimum


def test_minimum_hand():
    lrs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert suggest_minimum(lrs, [5.0, 4.0, 3.0, 1.0, 2.0, 6.0]) == 0.4  # argmin 3 -> 4/10
    assert suggest_minimum(lrs[:4], [3.0, 1.0, 1.0, 2.0]) == 0.2  # first of tied minima


def test_minimum_via_suggest_respects_trim():
    trimmed = [10.0] * 22
    trimmed[17] = 1.0  # raw index 20
    raw = _curve30(trimmed, head=[10.0, -50.0, 10.0], tail=[10.0, 10.0, -99.0, 10.0, 10.0])
    assert suggest(LRS30, raw, "minimum") == LRS30[20] / 10


def test_minimum_empty():
    with pytest.raises(ValueError, match="minimum"):
        suggest_minimum([], [])


# ---------------------------------------------------------------- steep


def test_steep_divides_by_log_lr_and_takes_left_point():
    # loss steps -1, -2.5, -1.1 over log steps ln2, ln10, ln2:
    # slopes -1.443, -1.086, -1.587 -> argmin 2 -> lrs[2] (left point) = 20.
    # Without the log division the argmin would be 1; the right point would be 40.
    assert suggest_steep([1.0, 2.0, 20.0, 40.0], [10.0, 9.0, 6.5, 5.4]) == 20.0


def test_steep_equal_log_steps():
    # decades: slopes -1, -3, -0.5, -0.1 per ln10 -> argmin 1 -> lrs[1]
    assert suggest_steep([1.0, 10.0, 100.0, 1e3, 1e4], [5.0, 4.0, 1.0, 0.5, 0.4]) == 10.0


def test_steep_via_suggest_respects_trim():
    trimmed = [10.0 - 0.25 * i for i in range(22)]
    trimmed[8] = trimmed[7] - 3.0  # biggest drop between trimmed 7 and 8 -> raw index 10
    raw = _curve30(trimmed, head=[100.0, 0.0, 50.0], tail=[-100.0, 100.0, -100.0, 100.0, -100.0])
    assert suggest(LRS30, raw, "steep") == LRS30[10]


def test_steep_errors():
    with pytest.raises(ValueError, match="at least 2"):
        suggest_steep([1.0], [1.0])
    with pytest.raises(ValueError, match="positive"):
        suggest_steep([0.0, 1.0], [2.0, 1.0])
    with pytest.raises(ValueError, match="differ"):
        suggest_steep([1.0, 1.0, 2.0], [3.0, 2.0, 1.0])


# ---------------------------------------------------------------- valley


def test_valley_hand_lds_and_sections():
    # losses 5 6 4 3 7 2 1 8 0.5 -> lds 1 1 2 3 1 4 5 1 6; max_end = 8, lds = 6,
    # max_start = 8 - 6 = 2, sections = 6/3 = 2.0, idx = 2 + int(2.0) + int(1.0) = 5.
    lrs = np.arange(9, dtype=float) * 10.0
    assert suggest_valley(lrs, [5.0, 6.0, 4.0, 3.0, 7.0, 2.0, 1.0, 8.0, 0.5]) == 50.0


def test_valley_monotone_decreasing():
    # lds = 1..20, max_end = 19, max_start = 19 - 20 = -1, sections = 20/3 = 6.67,
    # idx = -1 + 6 + int(3.33) = 8.
    lrs = np.arange(20, dtype=float)
    assert suggest_valley(lrs, np.arange(20, 0, -1, dtype=float)) == 8.0


def test_valley_no_descent_gives_first_point():
    # lds all 1: fastai's max_start, max_end stay at their initial 0, 0 -> idx 0
    lrs = [1.0, 2.0, 3.0, 4.0]
    assert suggest_valley(lrs, [1.0, 2.0, 3.0, 4.0]) == 1.0
    assert suggest_valley(lrs, [2.0, 2.0, 2.0, 2.0]) == 1.0
    assert suggest_valley([7.0], [3.0]) == 7.0


def test_valley_first_of_tied_longest_runs():
    # lds 1 2 3 1 2 3 -> first max at 2; max_start = -1, sections = 1, idx = -1 + 1 + 0 = 0
    assert suggest_valley([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], [4.0, 3.0, 2.0, 9.0, 8.0, 7.0]) == 1.0


def test_valley_index_minus_one_wraps_like_fastai():
    # lds 1 2 1 -> max_end 1, max_start -1, sections 2/3, idx -1 -> last point
    assert suggest_valley([1.0, 2.0, 3.0], [2.0, 1.0, 3.0]) == 3.0


def test_valley_via_suggest_respects_trim():
    # trimmed 0..15 decrease (lds 16 at trimmed 15), trimmed 16..21 are above all earlier
    # values: max_start = -1, sections = 16/3, idx = -1 + 5 + 2 = 6 -> raw index 9.
    # The head would lengthen the run and the tail would extend it if they were kept.
    trimmed = [20.0 - i for i in range(16)] + [30.0 + i for i in range(6)]
    raw = _curve30(trimmed, head=[100.0, 90.0, 80.0], tail=[0.0, -1.0, -2.0, -3.0, -4.0])
    assert suggest(LRS30, raw) == LRS30[9]
    assert suggest(LRS30, raw, "valley") == LRS30[9]


def test_valley_empty():
    with pytest.raises(ValueError, match="valley"):
        suggest_valley([], [])


# ---------------------------------------------------------------- slide


def test_slide_stops_mid_curve():
    # gradient of 1 1 1 1 1 2 4: 0 0 0 0 0.5 1.5 2; lr_diff 2, thresh 0.3
    # (r, l) = (-1,-3): |2-0.5|   > .3 -> lrs[-3] = lrs[4]
    #          (-2,-4): |1.5-0|   > .3 -> lrs[-4] = lrs[3]
    #          (-3,-5): |0.5-0|   > .3 -> lrs[-5] = lrs[2]
    #          (-4,-6): |0-0|     stop  -> lrs[2]
    lrs = [10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0]
    losses = [1.0, 1.0, 1.0, 1.0, 1.0, 2.0, 4.0]
    assert suggest_slide(lrs, losses, lr_diff=2, thresh=0.3) == 30.0
    assert suggest_slide(lrs, losses, lr_diff=2, thresh=0.3, adjust_value=0.5) == 15.0


def test_slide_walks_off_left_end():
    # gradient of 4 3 2 2 2 2 3 5: -1 -1 -0.5 0 0 0.5 1.5 2; every |g[r]-g[l]| > 0.3
    # until l = -8 has been taken (lrs[0]), then l = -9 < -8 ends the walk.
    lrs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    losses = [4.0, 3.0, 2.0, 2.0, 2.0, 2.0, 3.0, 5.0]
    assert suggest_slide(lrs, losses, lr_diff=2, thresh=0.3) == 1.0


def test_slide_threshold_is_strict():
    # gradient of 0 0 0 1 3 6 10: 0 0 0.5 1.5 2.5 3.5 4; with thresh 0.5 the pair
    # (-5,-7) has |0.5-0| = 0.5, not > 0.5, so the walk stops having taken lrs[-6] = lrs[1].
    lrs = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    losses = [0.0, 0.0, 0.0, 1.0, 3.0, 6.0, 10.0]
    assert suggest_slide(lrs, losses, lr_diff=2, thresh=0.5) == 2.0


def test_slide_via_suggest_defaults():
    # trimmed losses are a straight line (all gradients equal), so the walk never moves:
    # lrs[-1 - 15] of the 22 trimmed points = trimmed 6 = raw index 9. A wild tail
    # would move it if it were kept.
    trimmed = [5.0 - 0.25 * i for i in range(22)]
    raw = _curve30(trimmed, head=[9.0, 1.0, 9.0], tail=[50.0, -50.0, 50.0, -50.0, 50.0])
    assert suggest(LRS30, raw, "slide") == LRS30[9]


def test_slide_needs_more_than_lr_diff_points():
    lrs = np.arange(16, dtype=float) + 1.0
    losses = np.arange(16, dtype=float)
    assert suggest_slide(lrs, losses) == 1.0  # 16 points: lrs[-16]
    with pytest.raises(ValueError, match="at least 16"):
        suggest_slide(lrs[1:], losses[1:])
    with pytest.raises(ValueError, match="at least 2"):
        suggest_slide([1.0], [1.0], lr_diff=0)
    with pytest.raises(ValueError, match="lr_diff"):
        suggest_slide(lrs, losses, lr_diff=-1)


# ---------------------------------------------------------------- suggest / all


def _valley_curve() -> np.ndarray:
    # trimmed t0..t15 = 20 19 18 16 15 ... 4 (one drop of 2, at t2 -> t3), t16..t21 = 30..35
    trimmed = [20.0 - i - (i >= 3) for i in range(16)] + [30.0 + i for i in range(6)]
    return _curve30(trimmed, head=[100.0, 90.0, 80.0], tail=[0.0, -1.0, -2.0, -3.0, -4.0])


def test_all_returns_every_rule():
    raw = _valley_curve()
    out = suggest(LRS30, raw, "all")
    assert isinstance(out, dict) and tuple(out) == tuple(RULES)
    # raw = trimmed + 3.  valley: t0..t15 strictly decreasing, as in the valley test -> raw 9.
    # minimum: t15 -> raw 18.  steep: the drop of 2 starts at t2 -> raw 5.
    # slide: gradients are -1 -1 -1.5 -1.5 -1 ... -1 (to t14), 12.5, 13.5, 1, 1, 1, 1, 1;
    # every window pair (t21-k, t6-k) differs by > 0.005, so the walk takes t6, ..., t0 -> raw 3.
    assert out["valley"] == LRS30[9]
    assert out["minimum"] == LRS30[18] / 10
    assert out["steep"] == LRS30[5]
    assert out["slide"] == LRS30[3]
    for rule in RULES:
        assert out[rule] == suggest(LRS30, raw, rule)


def test_all_gives_nan_for_rules_that_cannot_run():
    raw = _valley_curve()
    raw[8] = np.nan  # trimmed keeps raw 3..7 only: 5 points, too few for slide
    out = suggest(LRS30, raw, "all")
    assert math.isnan(out["slide"])
    assert out["minimum"] == LRS30[7] / 10
    assert out["steep"] == LRS30[5]
    # 5 decreasing points: max_start -1, sections 5/3, idx -1 + 1 + 0 = 0 -> raw 3
    assert out["valley"] == LRS30[3]
    with pytest.raises(ValueError, match="slide"):
        suggest(LRS30, raw, "slide")


def test_all_nan_when_nothing_remains():
    raw = _valley_curve()
    raw[3] = np.inf
    out = suggest(LRS30, raw, "all")
    cut = [rule for rule, entry in RULES.items() if entry.skip is None]  # fastai's trim stops at the inf
    assert tuple(out) == tuple(RULES) and all(math.isnan(out[rule]) for rule in cut)
    # Lightning and torch-lr-finder skip 10 points and drop non-finite ones: the rest still counts
    assert all(math.isfinite(out[rule]) for rule in RULES if rule not in cut)
    with pytest.raises(ValueError, match="valley"):
        suggest(LRS30, raw)


def test_negative_and_zero_losses_give_same_suggestions():
    raw = _valley_curve()
    shifted = raw - 40.0  # exact in binary; all kept losses become <= 0
    assert np.all(trim(LRS30, shifted)[1] <= 0)
    assert suggest(LRS30, shifted, "all") == suggest(LRS30, raw, "all")


def test_unknown_method_lists_valid_ones():
    names = "'valley', 'steep', 'minimum', 'slide', 'descent', 'bottom', 'minimum_or_valley', 'lrlab', "
    names += "'lightning', 'torch_lr_finder', 'all'"
    with pytest.raises(ValueError, match=names):
        suggest(LRS30, _valley_curve(), "fastest")


def test_rules_reject_untrimmed_nan():
    with pytest.raises(ValueError, match="trim"):
        suggest_minimum([1.0, 2.0], [1.0, np.nan])


def test_fastai_rules_are_calibrated_on_the_ema_curve_and_descent_on_zero_lag() -> None:
    assert rule_curves() == {
        "valley": "ema",
        "steep": "ema",
        "minimum": "ema",
        "slide": "ema",
        "descent": "zero_lag",
        "bottom": "zero_lag",
        "minimum_or_valley": "ema",
        "lrlab": "ema",
        "lightning": "lightning",
        "torch_lr_finder": "torch_lr_finder",
    }
    assert set(rule_curves("zero_lag").values()) == {"zero_lag"}
    with pytest.raises(ValueError, match="calibrated"):
        rule_curves("lagged")


def test_suggest_on_curves_uses_each_rules_own_curve() -> None:
    """Two different curves: every rule must read the one its registry entry names."""
    lrs = np.geomspace(1e-6, 1.0, 60)
    falling_late = np.concatenate([np.full(40, 2.0), np.linspace(2.0, 0.5, 20)])
    falling_early = np.concatenate([np.linspace(2.0, 0.5, 30), np.full(30, 0.5)])
    curves = {"ema": falling_late, "zero_lag": falling_early, "lightning": falling_early}
    out = suggest_on_curves(lrs, {**curves, "torch_lr_finder": falling_late})
    for rule in ("valley", "steep", "minimum", "slide"):
        assert out[rule] == suggest(lrs, falling_late, rule) or (
            math.isnan(out[rule]) and math.isnan(suggest(lrs, falling_late, "all")[rule])
        )
    for rule in ("descent", "bottom", "lightning"):
        assert out[rule] == suggest(lrs, falling_early, rule)
    assert out["torch_lr_finder"] == suggest(lrs, falling_late, "torch_lr_finder")


def test_descent_is_the_first_point_past_the_fraction_of_the_drop() -> None:
    lrs = np.geomspace(1e-5, 1.0, 20)
    #  trimmed: [20//10 : -5] = indices 2..14; losses there 3.0 .. down to 1.0 at index 12
    losses = np.array([3.0] * 4 + [2.8, 2.5, 2.0, 1.6, 1.3, 1.15, 1.05, 1.02, 1.0, 1.1, 1.5] + [4.0] * 5)
    # start 3.0, minimum 1.0: 98% (the default) of the descent is reached at 1.04 -> 1.02 (index 11);
    # 90% at 1.2 -> 1.15 (index 9)
    assert suggest(lrs, losses, "descent") == lrs[11]
    assert suggest_descent(lrs[2:-5], losses[2:-5], fraction=0.9) == lrs[9]
    assert suggest_descent(lrs[2:-5], losses[2:-5], fraction=0.5) == lrs[6]
    assert math.isnan(suggest(lrs, np.linspace(1.0, 2.0, 20), "all")["descent"])


def test_bottom_is_the_lowest_points_lr_over_the_factor() -> None:
    lrs = np.geomspace(1e-5, 1.0, 20)
    losses = np.array([3.0] * 4 + [2.8, 2.5, 2.0, 1.6, 1.3, 1.15, 1.05, 1.02, 1.0, 1.1, 1.5] + [4.0] * 5)
    assert suggest(lrs, losses, "bottom") == lrs[12]  # BOTTOM_FACTOR = 1
    assert suggest_bottom(lrs[2:-5], losses[2:-5], factor=10) == pytest.approx(lrs[12] / 10)
    with pytest.raises(ValueError, match="at least 1"):
        suggest_bottom(lrs, losses, factor=0.5)


def test_edge_flags_mark_the_ramp_start_and_the_diverged_tail() -> None:
    lrs = np.geomspace(1e-6, 10.0, 50)
    losses = np.concatenate([np.full(15, 2.0), np.linspace(2.0, 1.0, 15), np.linspace(1.0, 5.0, 20)])
    start = lrs[50 // 10]
    assert edge_flag(lrs, losses, start) == "ramp start"
    assert edge_flag(lrs, losses, start / 10) == "ramp start"
    assert edge_flag(lrs, losses, lrs[25]) is None
    assert edge_flag(lrs, losses, lrs[40]) == "diverged tail"


def test_edge_flags_leave_the_flat_part_of_a_curve_alone() -> None:
    """A low first reading and a noisy flat start are not a diverged tail; the climb is."""
    lrs = np.geomspace(1e-7, 10.0, 100)
    rng = np.random.default_rng(0)
    flat = 3.4 + 0.01 * rng.standard_normal(100)
    flat[0] = 3.1
    losses = np.where(lrs > 1e-1, flat + 4 * np.log10(lrs / 1e-1), flat)
    for index in (20, 40, 60, 70):
        assert edge_flag(lrs, losses, lrs[index]) is None, index
    assert edge_flag(lrs, losses, lrs[90]) == "diverged tail"
    assert edge_flag(lrs, losses, lrs[98]) == "diverged tail"


def test_climb_start_is_where_the_curve_rises_clear_of_its_start() -> None:
    lrs = np.geomspace(1e-6, 10.0, 50)
    losses = np.concatenate([np.full(15, 2.0), np.linspace(2.0, 1.0, 15), np.linspace(1.0, 5.0, 20)])
    climb = climb_start(lrs, losses)
    first_above = 30 + int(np.flatnonzero(losses[30:] > 2.02)[0])  # start 2.0 + 1% (flat start)
    assert climb == lrs[first_above]
    assert math.isnan(climb_start(lrs, np.linspace(3.0, 1.0, 50)))  # never climbs back
    assert math.isnan(climb_start(lrs[:3], losses[:3]))  # nothing left after trimming


def test_minimum_or_valley_takes_valley_on_a_curve_that_never_fell() -> None:
    lrs = np.geomspace(1e-7, 10.0, 100)
    rng = np.random.default_rng(0)
    flat_then_rising = 0.80 + 0.004 * rng.standard_normal(100) + np.where(lrs > 1e-2, np.log10(lrs / 1e-2), 0)
    assert suggest(lrs, flat_then_rising, "minimum") < 1e-3  # noise in the flat part, / 10
    assert suggest(lrs, flat_then_rising, "minimum_or_valley") == suggest(lrs, flat_then_rising, "valley")
    falling = np.concatenate([np.linspace(2.0, 1.0, 70), np.linspace(1.0, 4.0, 30)])
    assert suggest(lrs, falling, "minimum") > suggest(lrs, falling, "valley")
    assert suggest(lrs, falling, "minimum_or_valley") == suggest(lrs, falling, "minimum")
    assert suggest_minimum_or_valley(lrs[10:-5], falling[10:-5]) == suggest(lrs, falling, "minimum")


def test_lrlab_scales_minimum_or_valley_also_on_a_curve_that_never_fell() -> None:
    lrs = np.geomspace(1e-7, 10.0, 100)
    falling = np.concatenate([np.linspace(2.0, 1.0, 70), np.linspace(1.0, 4.0, 30)])
    assert suggest(lrs, falling, "lrlab") == pytest.approx(
        SUGGESTION_SCALE * suggest(lrs, falling, "minimum")
    )
    rng = np.random.default_rng(0)
    flat_then_rising = 0.80 + 0.004 * rng.standard_normal(100) + np.where(lrs > 1e-2, np.log10(lrs / 1e-2), 0)
    valley = suggest(lrs, flat_then_rising, "valley")
    # the lowest point is noise in the flat part, far below: no cap there undoes valley's guard
    kept_lrs, kept = trim(lrs, flat_then_rising)
    assert kept_lrs[np.argmin(kept)] < valley / 100
    assert suggest(lrs, flat_then_rising, "lrlab") == pytest.approx(SUGGESTION_SCALE * valley)
    with pytest.raises(ValueError, match="positive"):
        suggest_lrlab(kept_lrs, kept, scale=0.0)


def _lightning_by_hand(losses: np.ndarray, beta: float = 0.98) -> list[float]:
    """Lightning's `_LRCallback.on_train_batch_end`, step by step: global_step is already i + 1."""
    avg, out = 0.0, []
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1 + 1)))
    return out


def test_lightning_and_torch_lr_finder_smoothers_follow_their_loops() -> None:
    raw = np.random.default_rng(0).uniform(0.5, 2.0, 40)
    np.testing.assert_allclose(lightning_smooth(raw), _lightning_by_hand(raw), rtol=1e-12)
    assert lightning_smooth(raw)[0] == pytest.approx(raw[0] * 0.02 / (1 - 0.98**2))  # 0.505x
    expected = [raw[0]]
    for loss in raw[1:]:
        expected.append(0.05 * loss + 0.95 * expected[-1])
    np.testing.assert_allclose(torch_lr_finder_smooth(raw), expected, rtol=1e-12)
    with_nan = np.concatenate([raw[:5], [np.nan], raw[5:]])
    assert (
        np.isnan(lightning_smooth(with_nan)[5:]).all()
        and np.isnan(torch_lr_finder_smooth(with_nan)[5:]).all()
    )


def test_steepest_rules_skip_and_differentiate_as_their_tools_do() -> None:
    """Lightning: skip 10 and 1, slope per unit LR; torch-lr-finder: skip 10 and 5, slope per step.
    On an exponential ramp with a steep drop late and a shallower one early, per-step slopes find
    the late drop and per-LR slopes the early one (dividing by the LR favours small LRs)."""
    lrs = np.geomspace(1e-6, 1.0, 100)
    losses = np.full(100, 2.0)
    losses[20:30] -= np.linspace(0.0, 0.3, 10)  # 0.03 per step at small LRs
    losses[30:] = losses[29]
    losses[60:70] -= np.linspace(0.0, 1.0, 10)  # 0.1 per step at larger LRs
    losses[70:] = losses[69]
    per_lr = lrs[10:-1][np.argmin(np.gradient(losses[10:-1], lrs[10:-1]))]
    per_step = lrs[10:-5][np.argmin(np.gradient(losses[10:-5]))]
    assert suggest(lrs, losses, "lightning") == per_lr and 20 <= list(lrs).index(per_lr) < 30
    assert suggest(lrs, losses, "torch_lr_finder") == per_step and 60 <= list(lrs).index(per_step) < 70
    linear = np.linspace(1e-4, 1e-2, 100)  # per LR and per step agree: only the skips differ
    drop_in_tail = losses.copy()
    drop_in_tail[96:] = [1.0, -5.0, -9.0, -20.0]  # seen by Lightning (skip_end 1), not torch-lr-finder
    assert list(linear).index(suggest(linear, drop_in_tail, "lightning")) >= 96
    assert 60 <= list(linear).index(suggest(linear, drop_in_tail, "torch_lr_finder")) < 70
