"""Training: config (YAML + overrides), DeepSpeed engine and loop (`trainer`), checkpoints with exact resume,
logs (JSONL, TensorBoard, tqdm), the encoder feature cache and plots. Import the submodules directly;
this package imports nothing heavy."""
