"""English G2P for Kokoro without a spaCy model download.

kokoro's ``KPipeline(lang_code="a")`` builds misaki's English G2P, whose
constructor runs ``spacy.cli.download("en_core_web_sm")``: that model is not on
any registry we can reach (PyPI names that look like it are third-party
re-uploads), so offline it fails. Two choices, named by the ``g2p`` param:

- ``offline`` (default): misaki's own English G2P -- its gold/silver lexicons,
  number/currency rules and espeak-ng fallback for unknown words (libespeak-ng
  from the espeakng-loader wheel) -- with spaCy's *blank* English tokenizer and
  a small rule tagger in place of en_core_web_sm's statistical tagger. The
  tagger marks punctuation, quotes, currency symbols and numbers, which is what
  misaki's punctuation and number handling keys on; homographs ("read", "lead")
  fall back to the lexicon's default reading.
- ``spacy``: kokoro's unchanged ``KPipeline(lang_code="a")``; needs
  en_core_web_sm installed from spaCy's own release (``python -m spacy download
  en_core_web_sm``, network required). Checked up front, never downloaded here.

The phonemes differ between the two, so the choice is part of the TTS cache key.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal, get_args

from pipeline.params import StageError

if TYPE_CHECKING:
    from kokoro import KModel, KPipeline

G2PChoice = Literal["offline", "spacy"]
G2P_CHOICES = get_args(G2PChoice)
SPACY_MODEL = "en_core_web_sm"

_SENTENCE_END = frozenset(".!?…")


class G2PError(StageError, RuntimeError):
    """The chosen G2P is unknown or cannot run here; the message says what to do."""


def check_g2p(g2p: str) -> None:
    """Fail before any model is built if ``g2p`` cannot be used."""
    if g2p not in G2P_CHOICES:
        raise G2PError(f"unknown g2p {g2p!r} (choices: {', '.join(G2P_CHOICES)})")
    if g2p == "spacy":
        import spacy.util

        if not spacy.util.is_package(SPACY_MODEL):
            raise G2PError(
                f"g2p 'spacy' needs the spaCy model {SPACY_MODEL}, which is not installed; install it with "
                f"`python -m spacy download {SPACY_MODEL}` (network needed) or use g2p 'offline'"
            )
_CLAUSE_MARKS = frozenset(";:—–-")


def _rule_tag(text: str, quote_open: bool, currencies: frozenset[str]) -> tuple[str, bool]:
    """Penn tag for a token misaki treats specially ('' = leave to the lexicon)."""
    if text in currencies:
        return "$", quote_open
    if any(c.isdigit() for c in text) and all(c.isdigit() or c in ".,:/-" for c in text):
        return "CD", quote_open
    if text == "(":
        return "-LRB-", quote_open
    if text == ")":
        return "-RRB-", quote_open
    if text == "“" or (text == '"' and not quote_open):
        return "``", True
    if text == "”" or text == '"':
        return "''", False
    if set(text) <= _SENTENCE_END:
        return ".", quote_open
    if text == ",":
        return ",", quote_open
    if set(text) <= _CLAUSE_MARKS:
        return ":", quote_open
    return "", quote_open


class RuleTagger:
    """spaCy's blank English tokenizer plus rule tags; stands in for ``en_core_web_sm``."""

    def __init__(self) -> None:
        import spacy
        from misaki.en import CURRENCIES

        self._tokenize = spacy.blank("en")
        self._currencies = frozenset(CURRENCIES)

    def __call__(self, text: str):
        doc = self._tokenize(text)
        quote_open = False
        for token in doc:
            tag, quote_open = _rule_tag(token.text, quote_open, self._currencies)
            if tag:
                token.tag_ = tag
        return doc


def offline_english_g2p(british: bool = False):
    """misaki's English G2P (lexicon + espeak fallback) on the rule tagger."""
    from misaki import en, espeak

    class OfflineEnglishG2P(en.G2P):
        # en.G2P.__init__ only differs by loading en_core_web_sm into self.nlp.
        def __init__(self) -> None:
            self.version = None
            self.british = british
            self.nlp = RuleTagger()
            self.lexicon = en.Lexicon(british)
            self.fallback = espeak.EspeakFallback(british=british)
            self.unk = ""  # as KPipeline: unknown words are skipped, not spoken as '❓'

    return OfflineEnglishG2P()


def english_pipeline(model: "KModel", g2p: str, repo_id: str, british: bool = False) -> "KPipeline":
    """A KPipeline for American (lang 'a') or British (lang 'b') English around ``model``."""
    from kokoro import KPipeline

    lang_code = "b" if british else "a"
    check_g2p(g2p)
    if g2p == "spacy":
        return KPipeline(lang_code=lang_code, repo_id=repo_id, model=model)

    class OfflineKPipeline(KPipeline):
        # KPipeline.__init__ for lang 'a'/'b' sets these five attributes, building
        # misaki's spaCy G2P for self.g2p; everything else is kokoro's code.
        def __init__(self) -> None:
            self.repo_id = repo_id
            self.lang_code = lang_code
            self.model = model
            self.voices = {}
            self.g2p = offline_english_g2p(british=british)

    return OfflineKPipeline()
