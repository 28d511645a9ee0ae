"""Language ID: both shipped backends name German, French, Spanish and English text."""

from __future__ import annotations

import pytest

from data_pipeline.langid import LangIdConfig, LanguageDetector, LanguageFilter
from lmforge.formats.corpus import Document

SENTENCES = {
    "de": "Gestern Abend sind wir mit dem Zug nach Hamburg gefahren, weil meine Schwester dort ihren "
    "Geburtstag gefeiert hat. Das Wetter war leider schlecht, aber das Essen war ausgezeichnet.",
    "fr": "Hier soir, nous avons pris le train pour Lyon parce que ma sœur y fêtait son anniversaire. "
    "Le temps était malheureusement mauvais, mais le repas était excellent.",
    "es": "Anoche tomamos el tren a Sevilla porque mi hermana celebraba allí su cumpleaños. "
    "Por desgracia el tiempo era malo, pero la comida estuvo excelente.",
    "en": "Last night we took the train to Leeds because my sister was celebrating her birthday there. "
    "The weather was unfortunately bad, but the food was excellent.",
}


@pytest.mark.parametrize("backend", ["pycld2", "py3langid"])
@pytest.mark.parametrize("lang", sorted(SENTENCES))
def test_detects_language(backend, lang):
    code, score = LanguageDetector(backend).detect(SENTENCES[lang])
    assert code == lang
    assert 0.5 < score <= 1.0


def test_filter_keeps_configured_languages_and_records_score():
    lang_filter = LanguageFilter(LangIdConfig(languages=["en", "fr"]))
    docs = {lang: Document(id=lang, text=t, source="test", domain="web") for lang, t in SENTENCES.items()}
    assert lang_filter(docs["en"]) is None and lang_filter(docs["fr"]) is None
    assert lang_filter(docs["de"]) == "language_de" and lang_filter(docs["es"]) == "language_es"
    assert docs["de"].metadata["language"] == "de" and docs["de"].metadata["language_score"] > 0.5


def test_fasttext_backend_requires_a_local_model_path():
    with pytest.raises(ValueError, match="fasttext_model_path"):
        LanguageDetector("fasttext")
