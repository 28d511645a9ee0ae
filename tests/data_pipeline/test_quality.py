"""The quality classifier beats chance on held-out data and survives save/load exactly."""

from __future__ import annotations

import random

import numpy as np

from data_pipeline.classifier import TextClassifier, train_classifier
from data_pipeline.quality import reference_prose
from data_pipeline.synthetic import foreign_page, menu_page, spam_page


def raw_web_like(rng: random.Random) -> str:
    """Raw pages as a crawler sees them: menus, link lists, shouting offers."""
    parts = [menu_page(rng), spam_page(rng, rng.randint(3, 10)), menu_page(rng)]
    if rng.random() < 0.3:
        parts.append(foreign_page(rng.choice(["de", "fr", "es"]), rng, 4))
    return "\n".join(parts)


def test_classifier_beats_chance_on_held_out_split(tmp_path):
    rng = random.Random(0)
    positives = reference_prose(150)
    negatives = [raw_web_like(rng) for _ in range(150)]
    classifier, report = train_classifier(positives, negatives, test_size=0.3, seed=0)
    # Balanced classes: chance accuracy is 0.5.
    assert report.accuracy > 0.8 and report.precision > 0.8 and report.recall > 0.8
    loaded = TextClassifier.load(classifier.save(tmp_path / "model"))
    texts = positives[:5] + negatives[:5]
    np.testing.assert_allclose(loaded.score(texts), classifier.score(texts), rtol=1e-6)
    assert (tmp_path / "model" / "weights.npz").exists() and loaded.report["n_test"] == report.n_test
