import pytest
import torch

from gsr_pyg import regularizer
from gsr_pyg.schedules import (
    ConstantWeight,
    LambdaWeight,
    LinearWarmupWeight,
    StaircaseWeight,
    WeightSchedule,
    as_schedule,
)


def test_schedules_values():
    assert ConstantWeight(0.1)(12345) == 0.1
    stair = StaircaseWeight(1.0, decay=0.99, every=100)
    assert stair(99) == 1.0 and stair(100) == pytest.approx(0.99)
    assert stair(24000) == pytest.approx(0.0896, abs=5e-5)  # 0.99 ** 240
    warm = LinearWarmupWeight(2.0, warmup_steps=10)
    assert [warm(s) for s in (0, 5, 10, 50)] == [0.0, 1.0, 2.0, 2.0]
    assert LambdaWeight(lambda s: s / 10)(7) == pytest.approx(0.7)


def test_reprs_are_stable():
    # the trainer stores the regularizer's repr (with these) in a run's config.json
    assert repr(ConstantWeight(0.01)) == "ConstantWeight(0.01)"
    assert repr(StaircaseWeight(1.0, decay=0.99)) == "StaircaseWeight(1, decay=0.99, every=100)"
    assert repr(LinearWarmupWeight(2.0, 10)) == "LinearWarmupWeight(2, warmup_steps=10)"


def test_state_dict_round_trip_restores_the_values():
    saved = StaircaseWeight(0.3, decay=0.5, every=7)
    state = saved.state_dict()
    assert state == {"weight": 0.3, "decay": 0.5, "every": 7}
    restored = StaircaseWeight(1.0, decay=0.9, every=100)
    restored.load_state_dict(state)
    assert [restored(t) for t in (0, 7, 20)] == [saved(t) for t in (0, 7, 20)] == [
        0.3, 0.15, 0.075]
    warm = LinearWarmupWeight(1.0, warmup_steps=2)
    warm.load_state_dict(LinearWarmupWeight(4.0, warmup_steps=8).state_dict())
    assert warm(2) == 1.0 and warm(8) == 4.0


def test_state_dict_is_plain_numbers_readable_with_weights_only(tmp_path):
    path = tmp_path / "s.pt"
    torch.save(StaircaseWeight(0.3, decay=0.5, every=7).state_dict(), path)
    assert torch.load(path, weights_only=True) == {"weight": 0.3, "decay": 0.5, "every": 7}
    assert LambdaWeight(lambda t: 1.0).state_dict() == {}


def test_loading_the_state_of_another_schedule_is_refused():
    with pytest.raises(ValueError, match=r"state of ConstantWeight has unknown keys "
                                         r"\['decay', 'every'\]; it holds \['weight'\]"):
        ConstantWeight(1.0).load_state_dict(StaircaseWeight(1.0, 0.5).state_dict())


def test_as_schedule():
    constant = as_schedule(0.25)
    assert isinstance(constant, ConstantWeight) and constant(99) == 0.25
    stair = StaircaseWeight(1.0, 0.5)
    assert as_schedule(stair) is stair
    fn = as_schedule(lambda t: 2.0 * t)
    assert isinstance(fn, LambdaWeight) and fn(3) == 6.0
    assert isinstance(fn, WeightSchedule)


@pytest.mark.parametrize("bad, error, message", [
    (True, TypeError, r"w must be a non-negative number, a WeightSchedule or a callable of "
                      r"the step, got True"),
    ("1e-2", TypeError, r"got '1e-2'"),
    (StaircaseWeight, TypeError, r"got <class"),  # the class, not an instance
    (-1.0, ValueError, r"w must be finite and >= 0, got -1\.0"),
    (float("nan"), ValueError, r"w must be finite and >= 0, got nan"),
])
def test_as_schedule_refuses(bad, error, message):
    with pytest.raises(error, match=message):
        as_schedule(bad, "w")


def test_schedule_arguments_are_checked():
    with pytest.raises(ValueError, match=r"decay must be finite and > 0, got 0\.0"):
        StaircaseWeight(1.0, decay=0.0)
    with pytest.raises(ValueError, match=r"warmup_steps must be >= 1, got 0"):
        LinearWarmupWeight(1.0, warmup_steps=0)
    with pytest.raises(TypeError, match=r"fn must be callable, got 3"):
        LambdaWeight(3)


def test_schedules_live_only_in_their_module():
    assert regularizer.__all__ == ["GraphSpectralRegularizer"]
