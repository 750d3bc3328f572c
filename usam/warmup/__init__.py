"""Offline warm-up of small encoders on fresh synthetic audio whose targets the synthesiser knows exactly:
MERT on music (usam.warmup.music), BEATs on sound events (usam.warmup.sound), with the shared loop in
usam.warmup.loop and the cached, config-driven entry point `usam warmup` in usam.warmup.run."""
from usam.warmup.music import MusicWarmupSettings, warm_up_music_encoder
from usam.warmup.sound import SoundWarmupSettings, warm_up_sound_encoder

__all__ = ["MusicWarmupSettings", "SoundWarmupSettings", "warm_up_music_encoder", "warm_up_sound_encoder"]
