"""Language identification with models that ship inside their pip package.

pycld2 (default, ~6k docs/s here) and py3langid (~700 docs/s) need no download; fastText
lid.176 is supported only from a local model file (``fasttext_model_path``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lmforge.formats.corpus import Document


@dataclass
class LangIdConfig:
    backend: str = "pycld2"  # pycld2 | py3langid | fasttext
    languages: list[str] = field(default_factory=lambda: ["en"])  # empty list keeps every language
    min_score: float = 0.65
    fasttext_model_path: str | None = None
    max_chars: int = 10_000  # the first 10k chars decide; enough for every backend
    domains: list[str] | None = None  # None: all domains


class LanguageDetector:
    """``detect(text) -> (iso639-1 code, score in [0, 1])``."""

    def __init__(self, backend: str = "pycld2", fasttext_model_path: str | None = None) -> None:
        self.backend = backend
        if backend == "pycld2":
            import pycld2

            self._cld2 = pycld2
        elif backend == "py3langid":
            from py3langid.langid import MODEL_FILE, LanguageIdentifier

            self._langid = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        elif backend == "fasttext":
            if not fasttext_model_path:
                raise ValueError("langid.backend=fasttext needs langid.fasttext_model_path (lid.176.bin)")
            import fasttext

            self._fasttext = fasttext.load_model(fasttext_model_path)
        else:
            raise ValueError(f"langid.backend must be pycld2, py3langid or fasttext, got {backend!r}")

    def detect(self, text: str) -> tuple[str, float]:
        if self.backend == "pycld2":
            try:
                reliable, _, details = self._cld2.detect(text, bestEffort=True)
            except self._cld2.error:  # invalid UTF-8 (lone surrogates) inside the text
                reliable, _, details = self._cld2.detect(
                    text.encode("utf-8", "ignore").decode("utf-8"), bestEffort=True
                )
            name, code, percent, _ = details[0]
            if code == "un":
                return "un", 0.0
            return code.split("-")[0], percent / 100.0
        if self.backend == "py3langid":
            code, prob = self._langid.classify(text)
            return code, float(prob)
        labels, probs = self._fasttext.predict(text.replace("\n", " "), k=1)
        return labels[0].removeprefix("__label__"), float(probs[0])


class LanguageFilter:
    name = "langid"

    def __init__(self, cfg: LangIdConfig) -> None:
        self.cfg = cfg
        self.detector = LanguageDetector(cfg.backend, cfg.fasttext_model_path)
        self.keep = set(cfg.languages)
        self.domains = cfg.domains

    def __call__(self, doc: Document) -> str | None:
        lang, score = self.detector.detect(doc.text[: self.cfg.max_chars])
        doc.metadata["language"] = lang
        doc.metadata["language_score"] = round(score, 4)
        if self.keep and lang not in self.keep:
            return f"language_{lang}"
        if score < self.cfg.min_score:
            return "language_low_score"
        return None
