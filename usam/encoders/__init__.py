"""Audio encoders. Each returns `EncoderOutput(features (B, T, D), mask (B, T))` at its own frame rate."""
from usam.encoders.base import AudioEncoder, EncoderOutput


def build_encoder(name: str, settings) -> AudioEncoder:
    if name == "whisper":
        from usam.encoders.whisper import WhisperAudioEncoder
        return WhisperAudioEncoder(settings)
    if name == "beats":
        from usam.encoders.beats import BEATsAudioEncoder
        return BEATsAudioEncoder(settings)
    if name == "mert":
        from usam.encoders.mert import MERTAudioEncoder
        return MERTAudioEncoder(settings)
    raise ValueError(f"unknown encoder {name!r}")


__all__ = ["AudioEncoder", "EncoderOutput", "build_encoder"]
