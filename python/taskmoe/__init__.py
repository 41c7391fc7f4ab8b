"""taskmoe: serve Task-level Mixture-of-Experts translation models on CPU.

    import taskmoe
    translator = taskmoe.Translator("en-de.tmoe", threads=2)
    results = translator.translate_batch(["Open the file."], beam_size=4)
    print(results[0].hypotheses[0])

The model runs in the C++ runtime (taskmoe._taskmoe, the pybind11 binding of the header-only
library); this file adds what is plain Python: streaming over an iterable. docs/python.md has
the whole API.
"""
from __future__ import annotations

import itertools
from typing import Iterable, Iterator

from ._taskmoe import (  # noqa: F401  (re-exported)
    ConfigError,
    Error,
    FileError,
    FormatError,
    Hypothesis,
    InvalidArgumentError,
    ScoringResult,
    Task,
    TranslationResult,
    Translator,
    __version__,
    active_isa,
    convert,
    list_tasks,
    verify,
    with_onednn,
    with_sentencepiece,
)

__all__ = [
    "ConfigError", "Error", "FileError", "FormatError", "Hypothesis", "InvalidArgumentError",
    "ScoringResult", "Task", "TranslationResult", "Translator", "__version__", "active_isa",
    "convert", "list_tasks", "verify", "with_onednn", "with_sentencepiece",
]


def _translate_iterable(self: Translator, source: Iterable[str], max_batch_size: int = 32,
                        batch_type: str = "examples", buffer_size: int = 0,
                        **options) -> Iterator[TranslationResult]:
    """Translates texts from any iterable (a file, a generator), yielding results in input order.

    At most `buffer_size` texts are held at once (default: 16 * max_batch_size for
    batch_type="examples", as CTranslate2's read-ahead; max_batch_size for "tokens"): each full
    buffer is one translate_batch call, which sorts it by length and splits it into batches of
    `max_batch_size` examples or tokens. The source is read lazily, so an endless generator works.
    Other keyword arguments are translate_batch's.
    """
    if max_batch_size < 1:
        raise InvalidArgumentError("max_batch_size must be >= 1, got %d" % max_batch_size)
    if buffer_size < 0:
        raise InvalidArgumentError("buffer_size must be >= 0, got %d" % buffer_size)
    if buffer_size == 0:
        buffer_size = max_batch_size * 16 if batch_type == "examples" else max_batch_size
    it = iter(source)
    while True:
        chunk = list(itertools.islice(it, buffer_size))
        if not chunk:
            return
        # translate_batch releases the GIL; the next chunk is read only when this one is yielded.
        yield from self.translate_batch(chunk, max_batch_size=max_batch_size, batch_type=batch_type, **options)


def _score_iterable(self: Translator, source: Iterable[str], target: Iterable[str], max_batch_size: int = 32,
                    batch_type: str = "examples", buffer_size: int = 0, **options) -> Iterator[ScoringResult]:
    """score_batch over two iterables of equal length (zipped lazily), results in input order."""
    if max_batch_size < 1:
        raise InvalidArgumentError("max_batch_size must be >= 1, got %d" % max_batch_size)
    if buffer_size <= 0:
        buffer_size = max_batch_size * 16 if batch_type == "examples" else max_batch_size
    pairs = itertools.zip_longest(source, target, fillvalue=None)
    while True:
        chunk = list(itertools.islice(pairs, buffer_size))
        if not chunk:
            return
        if any(s is None or t is None for s, t in chunk):
            raise InvalidArgumentError("score_iterable: source and target have different lengths")
        yield from self.score_batch([s for s, _ in chunk], [t for _, t in chunk],
                                    max_batch_size=max_batch_size, batch_type=batch_type, **options)


Translator.translate_iterable = _translate_iterable
Translator.score_iterable = _score_iterable
