"""Label calibration of ranked classification (usam/evaluation/calibration.py, `usam calibrate`, `usam eval
--label-calibration`): per-label biases fitted on validation scores remove a learned label prior, are saved beside
the model, and are added to the ranking scores by the evaluation."""
import json

import pytest
import torch

LABELS = ["dog bark", "rain", "siren"]


def _prior_scores(n=600, k=4, prior=3.0, seed=0):
    """Scores that carry the true label (+2 on it, unit noise) and a learned prior: +prior on label 0 for every
    clip, so label 0 wins on most clips of the others."""
    g = torch.Generator().manual_seed(seed)
    targets = torch.randint(0, k, (n,), generator=g)
    scores = torch.randn(n, k, generator=g) + 2.0 * torch.nn.functional.one_hot(targets, k)
    scores[:, 0] += prior
    return scores, targets


def test_fitted_biases_remove_a_learned_label_prior_on_fresh_clips():
    from usam.evaluation.calibration import fit_label_bias

    scores, targets = _prior_scores(seed=0)
    bias = fit_label_bias(scores, targets)
    assert bias.shape == (4,)
    assert abs(float(bias.sum())) < 1e-3  # the l2 term fixes the free common shift at zero sum
    assert float(bias[0] - bias[1:].mean()) == pytest.approx(-3.0, abs=0.4)  # the prior, learned back
    fresh, truth = _prior_scores(seed=1)

    def accuracy(s):
        return float((s.argmax(-1) == truth).float().mean())

    assert accuracy(fresh) < 0.45 and accuracy(fresh + bias) > 0.8
    # a minimum of the objective: moving any bias makes it worse
    def objective(b):
        return float(torch.nn.functional.cross_entropy(scores.double() + b.double(), targets) + 1e-3 * b.square().sum())

    for k in range(4):
        step = torch.zeros(4)
        step[k] = 0.05
        assert objective(bias) <= min(objective(bias + step), objective(bias - step))


def test_fit_refuses_bad_shapes_and_a_zero_l2():
    from usam.evaluation.calibration import fit_label_bias

    with pytest.raises(ValueError, match="scores"):
        fit_label_bias(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="scores"):
        fit_label_bias(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="l2"):
        fit_label_bias(torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), l2=0.0)


def test_the_calibration_file_round_trips_and_bad_files_name_themselves(tmp_path):
    from usam.evaluation.calibration import CALIBRATION_FILE, LabelCalibration, resolve_label_calibration

    calibration = LabelCalibration(labels=LABELS, bias=[0.5, -0.25, -0.25], ctc_weight=0.8, items=12,
                                   accuracy=50.0, calibrated_accuracy=75.0)
    calibration.save(tmp_path / CALIBRATION_FILE)
    assert LabelCalibration.load(tmp_path / CALIBRATION_FILE) == calibration
    assert calibration.as_bias() == {"dog bark": 0.5, "rain": -0.25, "siren": -0.25}
    # auto: the model folder's file when there is one; none: nothing; another weight: refused, naming both
    assert resolve_label_calibration(tmp_path, "auto", 0.8) == calibration
    assert resolve_label_calibration(tmp_path, "none", 0.8) is None
    assert resolve_label_calibration(tmp_path / "elsewhere", "auto", 0.8) is None
    with pytest.raises(ValueError, match=r"fitted at ranking CTC weight 0.8, but this run ranks at 0.5"):
        resolve_label_calibration(tmp_path, "auto", 0.5)
    with pytest.raises(FileNotFoundError, match="nothing.json"):
        resolve_label_calibration(tmp_path, str(tmp_path / "nothing.json"), 0.8)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a label calibration"):
        LabelCalibration.load(bad)
    bad.write_text(json.dumps({"labels": LABELS}))
    with pytest.raises(ValueError, match="missing bias, ctc_weight"):
        LabelCalibration.load(bad)
    bad.write_text(json.dumps({"labels": LABELS, "bias": [0.0], "ctc_weight": 0.8}))
    with pytest.raises(ValueError, match="bad.json: label calibration: 3 labels but 1 biases"):
        LabelCalibration.load(bad)


def _tiny_cls_set(tmp_path):
    import soundfile as sf
    from conftest import make_tiny_model, tone

    model, processor = make_tiny_model(**{"loss.lambda_ctc": 0.3})
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    rows = []
    for i, (label, freq) in enumerate([("dog bark", 300), ("siren", 700), ("rain", 450), ("siren", 900),
                                       ("dog bark", 250), ("rain", 520)]):
        path = tmp_path / f"c{i}.wav"
        sf.write(path, tone(1.0 + 0.2 * i, freq, seed=i), 16000)
        rows.append({"key": f"c{i}", "audio": str(path), "task": "cls", "text": label})
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model.eval(), processor, folder, manifest


def test_calibrate_fits_the_ranking_scores_and_eval_adds_the_biases(tmp_path, capsys):
    """`usam calibrate` writes the biases that fit_label_bias gives the ranking scores of its clips; `usam eval
    --cls-mode rank` then answers each clip with the best of scores + biases (found in the model folder by
    default), and refuses a calibration of another ranking weight."""
    from usam.cli import main as cli
    from usam.data import read_manifest
    from usam.evaluation.calibration import CALIBRATION_FILE, LabelCalibration, fit_label_bias, label_scores

    model, processor, folder, manifest = _tiny_cls_set(tmp_path)
    assert cli(["calibrate", str(folder), "--manifest", str(manifest), "--ctc-weight", "0.5", "--no-progress"]) == 0
    saved = LabelCalibration.load(folder / CALIBRATION_FILE)
    assert saved.labels == LABELS and saved.ctc_weight == 0.5 and saved.items == 6
    entries = read_manifest(manifest, strict=True)
    scores = label_scores(model, processor, entries, LABELS, 0.5, progress=False)
    truth = torch.tensor([LABELS.index(e.text[0]) for e in entries])
    assert torch.allclose(torch.tensor(saved.bias), fit_label_bias(scores, truth), atol=1e-4)
    assert "accuracy" in capsys.readouterr().out

    def evaluate(*extra):
        out = tmp_path / f"out{len(list(tmp_path.glob('out*')))}"
        code = cli(["eval", str(folder), "--manifest", str(manifest), "--out", str(out), "--cls-mode", "rank",
                    "--ctc-weight", "0.5", "--ctc-tasks", "cls", "--no-progress", *extra])
        if code:
            return code, None
        lines = (out / "predictions.jsonl").read_text().splitlines()
        return code, [json.loads(line)["prediction"] for line in lines], json.loads((out / "metrics.json").read_text())

    _, calibrated, report = evaluate()
    assert calibrated == [LABELS[k] for k in (scores + torch.tensor(saved.bias)).argmax(-1)]
    assert report["generation"]["label_bias"] == saved.as_bias()
    _, plain, report = evaluate("--label-calibration", "none")
    assert plain == [LABELS[k] for k in scores.argmax(-1)] and report["generation"]["label_bias"] is None
    # a bias large enough to decide every clip, from a file given by path
    strong = LabelCalibration(labels=LABELS, bias=[0.0, 100.0, 0.0], ctc_weight=0.5)
    _, forced, _ = evaluate("--label-calibration", str(strong.save(tmp_path / "strong.json")))
    assert forced == [LABELS[k] for k in (scores + torch.tensor(strong.bias)).argmax(-1)]
    # every clip on which some label can win (the tiny model's CTC term cannot spell any label in the shortest)
    assert all(p == "rain" for p, row in zip(forced, scores) if row.isfinite().any()) and forced.count("rain") >= 5
    code, _ = evaluate("--cls-ctc-weight", "0.8")
    assert code == 1 and "fitted at ranking CTC weight 0.5, but this run ranks at 0.8" in capsys.readouterr().err


def test_calibrate_refuses_a_manifest_without_cls_items(tmp_path, capsys):
    from usam.cli import main as cli

    _, _, folder, manifest = _tiny_cls_set(tmp_path)
    asr = tmp_path / "asr.jsonl"
    asr.write_text(json.dumps({"key": "a", "audio": str(tmp_path / "c0.wav"), "task": "asr", "text": "hi"}) + "\n")
    assert cli(["calibrate", str(folder), "--manifest", str(asr), "--no-progress"]) == 1
    assert "no cls items" in capsys.readouterr().err
    assert cli(["calibrate", str(folder), "--manifest", str(manifest), "--labels", "rain", "--no-progress"]) == 1
    assert "references outside the label set: dog bark, siren" in capsys.readouterr().err


def test_calibration_effect_script_fits_on_one_file_and_scores_the_others(tmp_path):
    """scripts/calibration_effect.py: biases fitted on each model's calibration scores, then each test set's
    accuracy before and after, per model and domain, as argmax of the (biased) weighted scores."""
    import importlib.util
    from pathlib import Path

    from usam.evaluation.calibration import fit_label_bias

    import soundfile as sf

    labels = ["beep", "chirp", "flute"]
    sf.write(tmp_path / "x.wav", torch.zeros(1600).numpy(), 16000)

    def write(name, refs, llm, ctc):
        manifest = tmp_path / f"{name}.jsonl"
        keys = [f"{name}-{i}" for i in range(len(refs))]
        manifest.write_text("".join(json.dumps({"key": k, "audio": str(tmp_path / "x.wav"), "task": "cls", "text": r}) + "\n"
                                    for k, r in zip(keys, refs)))
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"labels": labels, "manifest": str(manifest), "keys": keys,
                                    "llm": llm.tolist(), "ctc": ctc.tolist()}))
        return str(path)

    # a model that favours "chirp" by 2 on every clip (scores in the prior's test helper's spirit)
    g = torch.Generator().manual_seed(0)
    refs = [labels[i % 3] for i in range(60)]
    truth = torch.tensor([labels.index(r) for r in refs])
    llm = torch.randn(60, 3, generator=g) + 2.0 * torch.nn.functional.one_hot(truth, 3)
    llm[:, 1] += 2.0
    ctc = torch.randn(60, 3, generator=g)
    calibration = write("cal", refs, llm, ctc)
    test = write("test", refs[::-1], llm.flip(0), ctc.flip(0))  # other clips: the same scores in another order
    domains = tmp_path / "domains.json"
    domains.write_text(json.dumps({"beep": "sound", "chirp": "sound", "flute": "music"}))
    script = Path(__file__).resolve().parents[1] / "scripts" / "calibration_effect.py"
    spec = importlib.util.spec_from_file_location("calibration_effect", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "effect.json"
    assert module.main(["--weight", "0.5", "--calibration", calibration, "--test", f"t={test}",
                        "--domains", str(domains), "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    scores = 0.5 * llm + 0.5 * ctc
    bias = fit_label_bias(scores, truth)
    flipped, flipped_truth = scores.flip(0), truth.flip(0)
    before = 100.0 * float((flipped.argmax(-1) == flipped_truth).float().mean())
    after = 100.0 * float(((flipped + bias).argmax(-1) == flipped_truth).float().mean())
    assert report["test"]["t"]["all"]["before"]["values"] == [round(before, 2)]
    assert report["test"]["t"]["all"]["after"]["values"] == [round(after, 2)] and after > before
    assert set(report["test"]["t"]) == {"all", "music", "sound"}
    with pytest.raises(SystemExit):
        module.main(["--weight", "0.5", "--calibration", calibration, calibration, "--test", f"t={test}"])
