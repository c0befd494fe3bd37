"""The Hugging Face Hub at kdpipe's edges: datasets in (source.py), cards written beside a
trained run or an exported dataset (cards.py, export.py) and folders pushed out (push.py).

Light at import: `datasets` and `huggingface_hub` are imported inside the functions that use them.
"""
