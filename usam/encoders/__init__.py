"""Audio encoders. Each returns `EncoderOutput(features (B, T, D), mask (B, T))` at its own frame rate."""
from usam import SAMPLE_RATE
from usam.encoders.base import AudioEncoder, EncoderOutput


def build_encoder(name: str, settings, input_rate: int = SAMPLE_RATE) -> AudioEncoder:
    """`input_rate`: the rate of the audio the encoder will receive (it resamples to its own when they differ)."""
    if name == "whisper":
        from usam.encoders.whisper import WhisperAudioEncoder
        return WhisperAudioEncoder(settings, input_rate)
    if name == "beats":
        from usam.encoders.beats import BEATsAudioEncoder
        return BEATsAudioEncoder(settings, input_rate)
    if name == "mert":
        from usam.encoders.mert import MERTAudioEncoder
        return MERTAudioEncoder(settings, input_rate)
    raise ValueError(f"unknown encoder {name!r}")


__all__ = ["AudioEncoder", "EncoderOutput", "build_encoder"]
