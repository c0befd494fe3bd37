"""A token id as the OpenAI API reports it (text, bytes), and back: the one rule both ends of top-K
distillation use, so that what `teacher serve --model` sends is what training maps to ids.

A token's text is what it adds to the text before it (decoding it alone drops the
leading space of a SentencePiece word). Its bytes are exact for byte-level BPE
vocabularies (GPT-2, Llama 3, Qwen), where one token can hold half a UTF-8
character and its text is then only a replacement character.
"""

from __future__ import annotations

from functools import lru_cache

CONTEXT = 4  # tokens of context decoded before a token to find what it adds


@lru_cache(maxsize=1)
def _byte_of_char() -> dict[str, int]:
    # GPT-2's printable stand-ins for the 256 bytes (byte-level BPE vocabularies spell tokens with them).
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, n = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars)}


def is_byte_level(tokenizer) -> bool:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    return type(getattr(backend, "decoder", None)).__name__ == "ByteLevel"


def token_bytes(tokenizer, token_id: int) -> bytes | None:
    """The exact bytes of a byte-level BPE token; None for other vocabularies or special tokens."""
    if not is_byte_level(tokenizer) or token_id in set(tokenizer.all_special_ids):
        return None
    table = _byte_of_char()
    raw = tokenizer.convert_ids_to_tokens(token_id)
    if not isinstance(raw, str) or not all(c in table for c in raw):
        return None
    return bytes(table[c] for c in raw)


def piece(tokenizer, context: list[int], token_id: int) -> tuple[str, bytes]:
    """(text, bytes) of `token_id` after the ids in `context` (only the last CONTEXT are used)."""
    exact = token_bytes(tokenizer, token_id)
    if exact is not None:
        return exact.decode("utf-8", errors="replace"), exact
    before = list(context[-CONTEXT:])
    head = tokenizer.decode(before)
    whole = tokenizer.decode(before + [token_id])
    text = whole[len(head):] if whole.startswith(head) else tokenizer.decode([token_id])
    return text, text.encode("utf-8")


def vocabulary(tokenizer) -> dict[str | bytes, int]:
    """Text (and, where the text is not exact, bytes) -> id of every token of a vocabulary, special
    tokens under their own text; where two tokens read the same, an ordinary one, then the lower id."""
    special = set(tokenizer.all_special_ids)
    anchor = tokenizer("a", add_special_tokens=False)["input_ids"][-1:]
    out: dict[str | bytes, int] = {}
    for token_id in sorted(range(len(tokenizer)), key=lambda i: (i in special, i)):
        text, raw = piece(tokenizer, anchor, token_id)
        out.setdefault(raw, token_id)
        if text.encode("utf-8") == raw:
            out.setdefault(text, token_id)
    return out


def token_id(vocab: dict[str | bytes, int], text: str, raw: list[int] | None = None) -> int | None:
    """The id of a token the API reported as `text` (with `raw` bytes when the text is not exact)."""
    if raw is not None:
        return vocab.get(bytes(raw))
    return vocab.get(text)
