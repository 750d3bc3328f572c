"""The run log's wall-clock field: elapsed_s grows with time and carries over a resume (truncate_after)."""
import json
import time

from usam.training.logging import RunLogger


def records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_elapsed_grows_and_survives_a_resume(tmp_path):
    log = RunLogger(tmp_path, enabled=True, tensorboard=False)
    log.log("train", 1, {"loss": 1.0})
    time.sleep(0.2)
    log.log("valid", 2, {"loss": 0.9})
    time.sleep(0.2)
    log.log("train", 3, {"loss": 0.8})  # written after the checkpoint of step 2: redone on resume
    log.close()
    first = records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in first] == [1, 2, 3]
    assert 0 <= first[0]["elapsed_s"] < first[1]["elapsed_s"] - 0.15 < first[2]["elapsed_s"] - 0.3

    resumed = RunLogger(tmp_path, enabled=True, tensorboard=False)
    resumed.truncate_after(2)
    resumed.log("train", 3, {"loss": 0.7})
    resumed.close()
    after = records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in after] == [1, 2, 3] and after[2]["loss"] == 0.7
    # the new step-3 record counts on from step 2's time, not from zero and not from the lost step 3's time
    assert after[1]["elapsed_s"] <= after[2]["elapsed_s"] < after[1]["elapsed_s"] + 0.15


def test_score_curve_puts_stages_on_one_clock(tmp_path):
    from usam.training.plots import plot_score_curve, score_curve

    def write(run, rows):
        run.mkdir()
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    write(tmp_path / "s1", [{"kind": "train", "step": 1, "elapsed_s": 30.0, "loss": 2.0},
                            {"kind": "valid", "step": 2, "elapsed_s": 60.0, "loss": 1.9, "ce/asr": 3.0,
                             "asr/wer": 100.0},
                            {"kind": "summary", "step": 2, "elapsed_s": 120.0}])
    write(tmp_path / "s2", [{"kind": "valid", "step": 5, "elapsed_s": 180.0, "asr/wer": 80.0, "cls/accuracy": 20.0}])
    rows = score_curve([tmp_path / "s1", tmp_path / "s2"])
    # stage 2's clock starts at stage 1's last record (2 minutes); ce/ entries are losses, not scores
    assert rows == [{"run": 0, "step": 2, "minutes": 1.0, "asr/wer": 100.0},
                    {"run": 1, "step": 5, "minutes": 5.0, "asr/wer": 80.0, "cls/accuracy": 20.0}]
    png = plot_score_curve(rows, tmp_path / "curve.png", ["stage 1", "stage 2"])
    assert png.stat().st_size > 1000
    assert plot_score_curve([{"run": 0, "step": 1, "minutes": 0.1}], tmp_path / "none.png") is None
