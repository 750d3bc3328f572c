"""`usam demo`'s plan: the recipe's fixed steps, --steps to run the same recipe longer, and clear errors."""
from pathlib import Path

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


REFERENCE = {"align": 0.21, "stage2": 5.39, "stage2_without_reading": 3.55}  # the reference machine's timed steps
TWICE_AS_FAST = {name: s / 2 for name, s in REFERENCE.items()}


def test_the_eta_scales_the_untimed_parts_with_the_machine(tmp_path, capsys):
    from usam.demo import eval_reserve_s, plan_steps

    assert eval_reserve_s(REFERENCE) == pytest.approx(121 + 420 + 80 + 30 + 9)
    assert eval_reserve_s(TWICE_AS_FAST) == pytest.approx(eval_reserve_s(REFERENCE) / 2)
    plan = DemoPlan.make(tmp_path, quick=False, steps=["align=500", "stage2=150"])
    # the default plan: no Whisper reference (--whisper-reference); no label calibration (or no ranking): its 121 s
    assert eval_reserve_s(REFERENCE, plan) == pytest.approx(121 + 420 + 30 + 9)
    assert eval_reserve_s(REFERENCE, DemoPlan.make(tmp_path, quick=False, whisper_reference=True)) == \
        pytest.approx(121 + 420 + 80 + 30 + 9)
    assert eval_reserve_s(REFERENCE, DemoPlan.make(tmp_path, quick=False, label_calibration=False)) == \
        pytest.approx(420 + 30 + 9)
    assert eval_reserve_s(REFERENCE, DemoPlan.make(tmp_path, quick=False, cls_mode="generate")) == \
        pytest.approx(420 + 30 + 9)
    assert plan_steps(plan, REFERENCE, elapsed_s=0) == {"align": 500, "stage2": 150}  # no cap: the recipe
    slow = capsys.readouterr().out
    # 500 x 0.21 + 150 x 5.39 s of steps and 4 validations of 25 s; then 580 s of calibration and evaluation
    assert "training ETA 16.9 min, then about 10 min of evaluation" in slow
    assert "estimate from this machine's timed steps" in slow
    plan_steps(plan, TWICE_AS_FAST, elapsed_s=0)
    assert "training ETA 8.4 min, then about 5 min of evaluation" in capsys.readouterr().out


def test_minutes_cuts_every_stage_in_proportion_on_any_machine(tmp_path):
    from usam.demo import plan_steps

    capped = DemoPlan.make(tmp_path, quick=False, minutes=20, steps=["align=500", "stage2=150"])
    steps = plan_steps(capped, REFERENCE, elapsed_s=0)
    # 20 min less 580 s of calibration and evaluation leaves 620 s for 1,014 s of training: both cut to 61%
    assert steps == {"align": 305, "stage2": 91}
    assert steps["align"] / 500 == pytest.approx(steps["stage2"] / 150, abs=0.01)
    # everything scales with the machine, so half the minutes on a machine twice as fast cuts the same steps
    half = DemoPlan.make(tmp_path, quick=False, minutes=10, steps=["align=500", "stage2=150"])
    assert plan_steps(half, TWICE_AS_FAST, elapsed_s=0) == steps


def test_seeds_below_one_are_refused_with_the_reason(tmp_path, capsys):
    with pytest.raises(ValueError, match="demo seeds must be >= 1"):
        DemoPlan.make(tmp_path, quick=False, seeds=0)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seeds", "0"]) == 2
    assert "demo seeds must be >= 1 (the number of runs, each with its own seed), got 0" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
    assert DemoPlan.make(tmp_path, quick=False).seeds == 1  # one run, as --seed alone
    assert DemoPlan.make(tmp_path, quick=False, seed=5, seeds=3).seed == 5


def test_aggregate_seeds_gives_mean_range_and_how_many_seeds_had_a_figure():
    from usam.demo import aggregate_seeds, seeds_table

    summaries = {
        0: {"figures": {"general": {"asr_wer": 84.2, "whisper_reference_wer": 18.3},
                        "test": {"instrument_accuracy": 25.0}, "real": {"asr_wer": 87.9}}},
        1: {"figures": {"general": {"asr_wer": 74.5, "whisper_reference_wer": 18.3},
                        "test": {"instrument_accuracy": 37.5}}},  # no real-speech split in this run
        2: {"figures": {"general": {"asr_wer": 89.2, "whisper_reference_wer": 18.3},
                        "test": {"instrument_accuracy": 31.25}}},
    }
    result = aggregate_seeds(summaries)
    assert result["seeds"] == [0, 1, 2]
    wer = result["figures"]["general"]["asr_wer"]
    assert wer["mean"] == pytest.approx((84.2 + 74.5 + 89.2) / 3)
    assert (wer["min"], wer["max"], wer["range"]) == (74.5, 89.2, pytest.approx(14.7))
    assert wer["seeds"] == [0, 1, 2] and wer["values"] == [84.2, 74.5, 89.2] and wer["n"] == 3
    assert result["figures"]["general"]["whisper_reference_wer"]["range"] == 0.0
    assert result["figures"]["test"]["instrument_accuracy"]["mean"] == pytest.approx(31.25)
    real = result["figures"]["real"]["asr_wer"]  # only seed 0 has it: aggregated over that seed alone
    assert (real["n"], real["seeds"], real["mean"], real["range"]) == (1, [0], 87.9, 0.0)
    lines = seeds_table(result)
    assert any("asr_wer / general" in line and "82.63 [74.50, 89.20]" in line and "of 3" not in line
               for line in lines)
    assert any("asr_wer / real" in line and "87.90 [87.90, 87.90] (1 of 3 seeds)" in line for line in lines)


def test_seeds_run_one_folder_per_seed_and_write_the_aggregate(tmp_path, monkeypatch):
    import json

    import usam.demo as demo

    ran = []

    def fake_run(plan):  # the whole recipe is tested by test_demo.py; here only what run_seeds does around it
        ran.append((plan.out, plan.seed, plan.seeds))
        return {"figures": {"general": {"asr_wer": 80.0 + plan.seed}}, "steps": plan.steps, "wall_s": 1.0}

    monkeypatch.setattr(demo, "run", fake_run)
    plan = DemoPlan.make(tmp_path / "demo", quick=True, seed=4, seeds=2)
    demo.run_seeds(plan)
    assert ran == [(tmp_path / "demo/seed4", 4, 1), (tmp_path / "demo/seed5", 5, 1)]
    saved = json.loads((tmp_path / "demo/seeds_summary.json").read_text())
    assert saved["seeds"] == [4, 5] and saved["figures"]["general"]["asr_wer"]["mean"] == 84.5
    assert saved["machine"]["cpu_count"] >= 1 and saved["machine"]["architecture"] and saved["date"]
    assert saved["runs"]["5"]["out"] == str(tmp_path / "demo/seed5")

    # a seed that has its summary is read, not run again (a killed --seeds run resumes where it stopped)
    ran.clear()
    (tmp_path / "demo/seed6").mkdir()
    (tmp_path / "demo/seed6/demo_summary.json").write_text(json.dumps(
        {"figures": {"general": {"asr_wer": 70.0}}, "steps": {"stage2": 3}, "wall_s": 9.0}))
    demo.run_seeds(DemoPlan.make(tmp_path / "demo", quick=True, seed=6, seeds=2))
    assert ran == [(tmp_path / "demo/seed7", 7, 1)]
    saved = json.loads((tmp_path / "demo/seeds_summary.json").read_text())
    assert saved["figures"]["general"]["asr_wer"]["values"] == [70.0, 87.0]
    assert saved["runs"]["6"]["wall_s"] == 9.0


def test_set_reaches_the_stage_config_and_every_stage_model(tmp_path, monkeypatch):
    import usam.demo as demo
    import usam.training.trainer as trainer

    plan = DemoPlan.make(tmp_path / "demo", quick=True, settings=["stage2:data.reading.per_batch=4",
                                                                  "model:audio_tokens.mode=hybrid"])
    assert plan.settings == {"stage2": {"data.reading.per_batch": 4}, "model": {"audio_tokens.mode": "hybrid"}}
    seen = {}
    monkeypatch.setattr(trainer, "train", lambda cfg: seen.setdefault("cfg", cfg) and {})
    demo.train_stage(plan, tmp_path / "data", None, "stage2", 3, None)
    cfg = seen["cfg"]
    assert cfg.data.reading.per_batch == 4 and cfg.model["audio_tokens"]["mode"] == "hybrid"
    for bad in (["stage3:a=1"], ["stage2:noequals"], ["model:=1"]):
        with pytest.raises(ValueError, match="SCOPE:KEY=VALUE"):
            DemoPlan.make(tmp_path / "demo", quick=True, settings=bad)


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_ctc_weight_outside_zero_to_one_is_refused(tmp_path, capsys, weight):
    with pytest.raises(ValueError, match="demo ctc_weight must be in"):
        DemoPlan.make(tmp_path, quick=False, ctc_weight=weight)
    assert main(["demo", "--out", str(tmp_path / "demo"), "--ctc-weight", str(weight)]) == 2
    assert not (tmp_path / "demo").exists()
    assert DemoPlan.make(tmp_path, quick=False).ctc_weight == 0.5
    assert DemoPlan.make(tmp_path, quick=False, ctc_weight=0).ctc_weight == 0


def test_classification_ranks_the_label_set_by_default(tmp_path, capsys):
    assert DemoPlan.make(tmp_path, quick=False).cls_mode == "rank"
    assert DemoPlan.make(tmp_path, quick=False, cls_mode="generate").cls_mode == "generate"
    with pytest.raises(ValueError, match="demo cls_mode must be"):
        DemoPlan.make(tmp_path, quick=False, cls_mode="vote")
    with pytest.raises(SystemExit):
        main(["demo", "--out", str(tmp_path / "demo"), "--cls-mode", "vote"])
    # ranked labels take their own CTC weight (chosen on validation clips); the LLM alone throughout at ctc_weight 0
    assert DemoPlan.make(tmp_path, quick=False).cls_ctc_weight == 0.8
    assert DemoPlan.make(tmp_path, quick=False, ctc_weight=0).cls_ctc_weight == 0
    assert DemoPlan.make(tmp_path, quick=False, cls_ctc_weight=0.3).cls_ctc_weight == 0.3
    with pytest.raises(ValueError, match="demo cls_ctc_weight"):
        DemoPlan.make(tmp_path, quick=False, cls_ctc_weight=1.5)
    assert not (tmp_path / "demo").exists()


def test_encoders_switch_encoders_and_warm_up_those_without_weights(tmp_path, monkeypatch):
    """--encoders whisper mert: MERT is enabled and warmed up (quick: a few steps) into OUT/warmup/mert, which every
    stage's model then loads; BEATs stays off and is not warmed up."""
    import usam.demo as demo
    import usam.training.trainer as trainer
    import usam.warmup.run as warmup_run

    plan = DemoPlan.make(tmp_path / "demo", quick=True, encoders=["mert", "whisper"])
    assert plan.encoders == ("whisper", "mert")
    calls = []

    def fake_warmup(config, out, overrides=None, force=False, progress=True):
        calls.append((Path(config).name, Path(out), overrides))
        return Path(out), [{"step": 4, "minutes": 0.1, "seen/instrument_accuracy": 50.0}], False

    monkeypatch.setattr(warmup_run, "run_warmup", fake_warmup)
    assert demo.warm_up_encoders(plan) == {"mert": str(tmp_path / "demo/warmup/mert")}
    assert calls == [("demo_mert.yaml", tmp_path / "demo/warmup/mert",
                      {"steps": demo.QUICK_WARMUP_STEPS, "eval_every": demo.QUICK_WARMUP_STEPS})]
    seen = {}
    monkeypatch.setattr(trainer, "train", lambda cfg: seen.setdefault("cfg", cfg) and {})
    demo.train_stage(plan, tmp_path / "data", None, "align", 3, None)
    model = seen["cfg"].model
    assert model["mert"]["enabled"] and model["mert"]["name_or_path"] == str(tmp_path / "demo/warmup/mert")
    assert model["whisper"].get("enabled", True) and not model["beats"]["enabled"]
    with pytest.raises(ValueError, match="demo encoders must be some of whisper, beats, mert"):
        DemoPlan.make(tmp_path / "demo", quick=True, encoders=["clap"])
