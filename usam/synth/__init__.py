"""Synthetic multi-domain corpus (speech, sound events, music, mixtures) for `usam synth`.

`generate_corpus(out_dir, load_config(path), hours=..., seed=..., jobs=...)` writes the audio, one JSON
Lines manifest per split and `metadata.json`; see `usam.synth.corpus` for the layout.
"""
from usam.synth.config import SynthConfigError, load_config
from usam.synth.corpus import GENERATOR_VERSION, generate_corpus
from usam.synth.tools import MissingToolError

__all__ = ["GENERATOR_VERSION", "MissingToolError", "SynthConfigError", "generate_corpus", "load_config"]
