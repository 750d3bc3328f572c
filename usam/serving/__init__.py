"""OpenAI-compatible HTTP serving of a U-SAM model (FastAPI + uvicorn). See usam.serving.app."""
