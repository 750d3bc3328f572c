"""Pretrained weights offline: converters from formats that pip packages ship, and the model-source resolver.

- `usam.hub.convert_whisper_ct2.convert_ct2_whisper(ct2_dir, out_dir)`: a CTranslate2 Whisper folder
  -> a transformers `WhisperForConditionalGeneration` + `WhisperProcessor` folder.
- `usam.hub.convert_gguf.convert_gguf_llm(gguf_path, out_dir)`: a GGUF causal LM -> a transformers folder.
- `usam.hub.resolve.resolve_model(name_or_path, kind=None)`: a local folder for a model id, trying a local
  path, the Hugging Face cache/hub, then a known pip package converted once into `$USAM_CACHE/models`.

Submodules import torch/transformers; this package file stays light so `usam --help` stays fast.
"""
