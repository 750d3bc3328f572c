"""`usam demo`'s plan: the recipe's fixed steps, --steps to run the same recipe longer, and clear errors."""
import pytest

from usam.cli import main
from usam.demo import STAGES, DemoPlan, stage_config


def test_the_recipe_steps_come_from_the_training_yamls_and_steps_overrides_them(tmp_path):
    recipe = DemoPlan.make(tmp_path, quick=False)
    assert recipe.steps == {name: int(stage_config(name)["schedule"]["max_steps"]) for name, _ in STAGES}
    longer = DemoPlan.make(tmp_path, quick=False, steps=["align=2000", "stage2=450"])
    assert longer.steps == {"align": 2000, "stage2": 450}
    partly = DemoPlan.make(tmp_path, quick=True, steps=["stage2=12"])
    assert partly.steps == {"align": 6, "stage2": 12}  # --quick's align steps kept


@pytest.mark.parametrize("item, reason", [("stage1=10", "names no stage; stages: align, stage2"),
                                          ("align=ten", "needs a whole number of steps"),
                                          ("align=0", "needs a whole number of steps")])
def test_bad_steps_are_refused_with_the_reason(tmp_path, item, reason, capsys):
    with pytest.raises(ValueError, match=reason):
        DemoPlan.make(tmp_path, quick=False, steps=[item])
    assert main(["demo", "--out", str(tmp_path / "demo"), "--steps", item]) == 2
    assert reason in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()  # refused before any work


REFERENCE = {"align": 0.52, "stage2": 4.46}  # the reference machine's timed steps
TWICE_AS_FAST = {name: s / 2 for name, s in REFERENCE.items()}


def test_the_eta_scales_the_untimed_parts_with_the_machine(tmp_path, capsys):
    from usam.demo import eval_reserve_s, plan_steps

    assert eval_reserve_s(REFERENCE) == pytest.approx(605 + 110 + 16)
    assert eval_reserve_s(TWICE_AS_FAST) == pytest.approx(eval_reserve_s(REFERENCE) / 2)
    plan = DemoPlan.make(tmp_path, quick=False, steps=["align=500", "stage2=150"])
    assert plan_steps(plan, REFERENCE, elapsed_s=0) == {"align": 500, "stage2": 150}  # no cap: the recipe
    slow = capsys.readouterr().out
    # 500 x 0.52 + 150 x 4.46 s of steps and 4 validations of 25 s; then 731 s of evaluation
    assert "training ETA 17.1 min, then about 12 min of evaluation" in slow
    assert "estimate from this machine's timed steps" in slow
    plan_steps(plan, TWICE_AS_FAST, elapsed_s=0)
    assert "training ETA 8.6 min, then about 6 min of evaluation" in capsys.readouterr().out


def test_minutes_cuts_every_stage_in_proportion_on_any_machine(tmp_path):
    from usam.demo import plan_steps

    capped = DemoPlan.make(tmp_path, quick=False, minutes=20, steps=["align=500", "stage2=150"])
    steps = plan_steps(capped, REFERENCE, elapsed_s=0)
    # 20 min less 731 s of evaluation leaves 469 s for 1,029 s of training: both stages cut to 45%
    assert steps == {"align": 227, "stage2": 68}
    assert steps["align"] / 500 == pytest.approx(steps["stage2"] / 150, abs=0.01)
    # everything scales with the machine, so half the minutes on a machine twice as fast cuts the same steps
    half = DemoPlan.make(tmp_path, quick=False, minutes=10, steps=["align=500", "stage2=150"])
    assert plan_steps(half, TWICE_AS_FAST, elapsed_s=0) == steps
