"""`usam demo --quick`: the newcomer's first command, end to end (corpus, cache, two stages, evaluation, plots,
answers), on the real offline weights (Whisper tiny.en and SmolLM2-135M from their pip packages) and with the
real recordings scripts/setup.sh fetches (the test_real split)."""
import json
import subprocess
import sys

TASKS = {"asr", "s2tt", "aac", "mc", "cls", "qa"}


def test_demo_quick_end_to_end(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "usam.cli", "demo", "--quick", "--out", str(out),
                             "--eval-points", "3", "--llm-alone",
                             "--whisper-reference"],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    summary = json.loads((out / "demo_summary.json").read_text())
    assert TASKS <= set(summary["metrics"]["test"])  # every task of the test split scored
    # the generalisation split (held-out voices, hand-written sentences) and the held-out timbres, with
    # Whisper tiny.en's own decoder as the reference on the former
    assert "asr" in summary["metrics"]["general"] and {"cls", "qa", "mc"} <= set(summary["metrics"]["timbre"])
    figures = summary["figures"]
    assert {"asr_wer", "sound_accuracy", "instrument_accuracy"} <= set(figures["test"])
    assert {"asr_wer", "whisper_reference_wer", "asr_ctc_wer"} <= set(figures["general"])
    assert 0 <= figures["general"]["asr_ctc_wer"]  # what the tokens spell, beside what the LLM wrote
    assert 0 <= figures["general"]["asr_spelled_share"] <= 100  # and how many transcripts are that spelling
    # transcripts by joint CTC / LLM decoding, with the LLM alone scored beside them on the same clips
    generation = json.loads((out / "eval_general" / "metrics.json").read_text())["generation"]
    assert generation["ctc_weight"] == 0.5 and generation["ctc_tasks"] == ["asr", "cls"]
    assert generation["ctc_rescore"] is True  # the search's answer set against the spelling
    # class labels by ranking the label set: every answer is a label
    timbre = json.loads((out / "eval_timbre" / "metrics.json").read_text())
    assert timbre["generation"]["cls_mode"] == "rank" and timbre["metrics"]["cls"]["unmapped_rate"] == 0
    assert timbre["generation"]["cls_ctc_weight"] == 0.8
    # ... plus the per-label biases fitted after training on fresh in-domain clips at that weight
    calibration = summary["label_calibration"]
    assert calibration["ctc_weight"] == 0.8 and calibration["clips"] == 6
    assert json.loads((out / "stage2/final/label_calibration.json").read_text())["ctc_weight"] == 0.8
    assert timbre["generation"]["label_bias"] == calibration["bias"] and len(calibration["bias"]) >= 2
    assert summary["timings_s"]["label_calibration"] > 0
    assert {"asr_wer", "asr_llm_wer"} <= set(figures["real"]) and "asr_llm_wer" in figures["general"]
    alone = json.loads((out / "eval_general_llm_alone" / "metrics.json").read_text())
    assert alone["generation"]["ctc_weight"] == 0.0 and alone["metrics"]["asr"]["n"] == 4
    assert 0 <= figures["general"]["whisper_reference_wer"] < 100  # tiny.en understands these voices
    # real human speech (PocketSphinx's recordings, fetched by scripts/setup.sh), with the reference on it too
    assert "asr" in summary["metrics"]["real"] and {"asr_wer", "whisper_reference_wer"} <= set(figures["real"])
    assert figures["real"]["whisper_reference_wer"] < 50
    assert summary["peak_rss_mb"] > 0 and summary["steps"] == {"align": 6, "stage2": 10}
    assert TASKS <= set(summary["expert_usage"]) and all(len(w) == 3 for w in summary["expert_usage"].values())
    assert [a["domain"] for a in summary["answers"]] == ["speech", "sound", "music"]
    assert all(isinstance(a["answer"], str) for a in summary["answers"])
    for name in ("predictions.jsonl", "metrics.json", "metrics.md"):
        assert (out / "eval" / name).stat().st_size > 0
    plots = [p for p in summary["plots"] if p.endswith(".png")]
    assert any("loss" in p for p in plots) and any("expert" in p for p in plots)
    assert (out / "stage2/final/usam_weights.safetensors").exists()
    # --eval-points 3 over stage 2's 10 steps: every ceil(10/3) = 4 steps and on the last, each with ASR's WER
    records = [json.loads(line) for line in (out / "stage2/metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["kind"] == "valid"]
    assert [r["step"] for r in valid] == [4, 8, 10] and all("asr/wer" in r for r in valid)
    # the same validations on one clock over both stages: alignment's (6 steps: 2, 4, 6), then stage 2's; the
    # alignment stage scores what its tokens spell by CTC (no LLM) beside the generated answers
    curve = summary["curve"]
    assert [(r["run"], r["step"]) for r in curve] == [(0, 2), (0, 4), (0, 6), (1, 4), (1, 8), (1, 10)]
    assert all("asr/ctc_wer" in r and "cls/ctc_accuracy" in r for r in curve)
    # the alignment stage generates nothing through the LLM, which has not learned to read audio tokens yet
    assert all(("asr/wer" in r) == (r["run"] == 1) for r in curve)
    assert all(b["minutes"] > a["minutes"] for a, b in zip(curve, curve[1:]))
    assert any(p.endswith("quality_curve.png") for p in plots)
    # the alignment stage ran no LLM (no LM loss) and learned by CTC; stage 2 keeps 0.3 x CTC beside the LM
    # loss; each logs the audio tokens' scale against the text embeddings (projector.output_norm starts it at 1)
    for stage, lm in (("align", False), ("stage2", True)):
        train = [json.loads(line) for line in (out / stage / "metrics.jsonl").read_text().splitlines()]
        train = [r for r in train if r["kind"] == "train"]
        assert train and all(r["ctc"] > 0 and (r["ce"] > 0) == lm for r in train), stage
        assert all(0.3 < r["audio_norm_ratio"] < 3 and -1 <= r["audio_clip_cosine"] <= 1 for r in train)
    # stage 2 started from the alignment stage's connector and trained it further
    from safetensors.torch import load_file

    first = load_file(str(out / "align/final/usam_weights.safetensors"))
    final = load_file(str(out / "stage2/final/usam_weights.safetensors"))
    assert any(k.startswith("ctc.") for k in first) and set(first) == set(final)
    assert any(not final[k].equal(first[k]) for k in first if k.startswith("projector."))
    assert "usam chat" in result.stdout and "usam serve" in result.stdout
