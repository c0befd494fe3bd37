"""kdpipe: black-box knowledge distillation of LLMs, one JSONL stage at a time."""

__version__ = "0.1.0"
