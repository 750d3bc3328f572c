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
