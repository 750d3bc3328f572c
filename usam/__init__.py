"""U-SAM: a unified speech, audio and music language model.

Public entry points: `USAMConfig`, `USAMModel`, `USAMProcessor` (see docs/model_api.md).
Imports are lazy so that `usam --help` and the data tools start fast.
"""
SAMPLE_RATE = 16000  # the project's reference rate; each encoder resamples to its own

__version__ = "0.1.0"

_LAZY = {
    "USAMConfig": "usam.config",
    "USAMModel": "usam.modeling",
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
