"""U-SAM: a unified speech, audio and music language model.

Public entry points: `USAMConfig`, `USAMForConditionalGeneration` (alias `USAMModel`), `USAMProcessor`
(see docs/model_api.md). `import usam` registers them with transformers' Auto classes (AutoConfig, AutoModel,
AutoModelForMultimodalLM, AutoProcessor, AutoFeatureExtractor), so that a saved folder loads the transformers way.
"""
SAMPLE_RATE = 16000  # the project's reference rate; each encoder resamples to its own

__version__ = "0.1.0"

_LAZY = {
    "USAMConfig": "usam.config",
    "USAMModel": "usam.modeling",
    "USAMForConditionalGeneration": "usam.modeling",
    "USAMFeatureExtractor": "usam.processing",
    "USAMOutput": "usam.modeling",
    "USAMProcessor": "usam.processing",
    "EncoderOutput": "usam.encoders.base",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'usam' has no attribute {name!r}")


__all__ = ["SAMPLE_RATE", *_LAZY]


def register_auto_classes() -> None:
    """Make transformers' Auto classes (and pipeline()) know `model_type: usam`. Run by `import usam`."""
    import transformers
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

    from usam.config import USAMConfig
    from usam.modeling import USAMForConditionalGeneration
    from usam.processing import USAMFeatureExtractor, USAMProcessor

    AutoConfig.register(USAMConfig.model_type, USAMConfig, exist_ok=True)
    # AutoModelForMultimodalLM (transformers 5) is what pipeline("any-to-any") loads
    for auto in (AutoModel, getattr(transformers, "AutoModelForMultimodalLM", None)):
        if auto is not None:
            auto.register(USAMConfig, USAMForConditionalGeneration, exist_ok=True)
    AutoFeatureExtractor.register(USAMConfig, USAMFeatureExtractor, exist_ok=True)
    AutoProcessor.register(USAMConfig, USAMProcessor, exist_ok=True)


register_auto_classes()
