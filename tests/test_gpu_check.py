"""scripts/gpu_check.sh --cpu: the GPU check's dry run (scaled-down model, DeepSpeed bf16 on the CPU)."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_prints_every_figure():
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--cpu"], cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=600,
                          env=dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="2"))
    assert proc.returncode == 0, proc.stdout[-4000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    assert [r["stage"] for r in result["train"]] == [1, 2]
    for row in result["train"]:
        assert row["step_s"] > 0 and row["tokens_per_step"] > 0 and row["peak_mem_mb"] > 0
        assert row["trained_through_params"] > 0 and math.isfinite(row["loss_last"])
    assert [g["batch"] for g in result["generate"]] == [1, 4]
    assert all(g["new_tokens"] == 4 and g["tokens_per_s"] > 0 for g in result["generate"])
    assert "== pytest -m gpu" in proc.stdout and "4 skipped" in proc.stdout
    for text in ("stage 1: step", "stage 2: step", "tokens/s, MFU", "generation batch 4"):
        assert text in proc.stdout
