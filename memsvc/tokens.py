"""The token rule every budget in memsvc is counted by (the same one outside evaluations use)."""

import math

TOKENS_PER_WORD = 1.33


def count_tokens(text: str) -> int:
    """Tokens of `text` as words x 1.33, rounded up so a packed context never exceeds its budget."""
    return math.ceil(len(text.split()) * TOKENS_PER_WORD)
