"""Synthetic multi-domain corpus (speech, sound events, music, mixtures) for `usam synth`.

`generate_corpus(out_dir, load_config(path), hours=..., seed=..., jobs=...)` writes the audio, one JSON
Lines manifest per split (and per split and task) and `metadata.json`; see `usam.synth.corpus` for the layout.

Manifest line fields: key, audio (relative to the manifest's folder), task (asr|s2tt|aac|mc|cls|qa), text
(the reference), instruction (qa: the question), duration (s), lang (s2tt: "zh"), qtype (qa: instrument,
tempo, mode, drums, count, speech_and_music, background), label (cls and the clip's class), domain
(speech|sound|music|mix), split, clip (the clip id shared by its lines), and what made the clip: voice,
voice_seen, speed, pitch, reverb, text_source (grammar|everyday|handwritten), template (grammar sentences)
(spoken clips); attributes (sound and music; a sound's attributes.timbre names its held-out synthesis
setting); timbre_seen (sound and music); program (GM, music); background, snr_db, has_music, music
(mixtures). Besides train/valid/test, test_general (hand-written sentences, held-out voices) and test_timbre
(held-out GM programs and held-out sound synthesis settings) measure generalisation; see usam.synth.corpus.

Domains and tasks:
  speech  asr, s2tt (zh)                     everyday (usam.synth.text) and grammar sentences (s2tt: grammar
                                             only) by espeak-ng / flite / festival voices
  sound   aac, cls, qa count                 procedural events (numpy), one synthesis setting per class held out
  music   mc, cls (instrument), qa           pretty_midi + fluidsynth (instrument, tempo, mode, drums)
  mix     asr, qa speech_and_music/background  speech over music or a noise bed
"""
from usam.synth.config import SynthConfigError, load_config
from usam.synth.corpus import GENERATOR_VERSION, generate_corpus
from usam.synth.tools import MissingToolError

__all__ = ["GENERATOR_VERSION", "MissingToolError", "SynthConfigError", "generate_corpus", "load_config"]
