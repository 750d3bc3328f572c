import os

import pytest
import torch

# Two cores here: keep each test process from oversubscribing them.
torch.set_num_threads(int(os.environ.get("USAM_TEST_THREADS", "2")))


import numpy as np  # noqa: E402

TINY_YAML = str(__import__("pathlib").Path(__file__).resolve().parents[1] / "configs/model/tiny.yaml")


def make_tiny_model(seed: int = 0, **overrides):
    """The all-random tiny model, built with a fixed seed. `overrides` use dotted keys: {"llm.train": "full"}."""
    from usam import USAMConfig, USAMModel, USAMProcessor

    torch.manual_seed(seed)
    config = USAMConfig.from_yaml(TINY_YAML, overrides=overrides)
    model = USAMModel(config)
    return model, USAMProcessor.from_model(model)


def tone(seconds: float, freq: float = 440.0, seed: int = 0, sr: int = 16000) -> np.ndarray:
    """A sine with a little seeded noise: distinct, deterministic test audio."""
    t = np.arange(int(seconds * sr)) / sr
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * freq * t) + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


@pytest.fixture
def tiny():
    return make_tiny_model()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny model whose answers depend on its input (for chat and serving tests); built once."""
    from usam.serving.testing import build_tiny_model

    return build_tiny_model(tmp_path_factory.getbasetemp() / "usam-tiny", reuse=True)


@pytest.fixture(scope="module")
def loaded(tiny_model_dir):
    from usam.modeling import USAMModel
    from usam.processing import USAMProcessor

    return USAMModel.from_pretrained(tiny_model_dir).eval(), USAMProcessor.from_pretrained(tiny_model_dir)
