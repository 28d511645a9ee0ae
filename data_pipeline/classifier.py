"""A small text classifier: hashed word n-grams + logistic regression (scikit-learn).

Saved as ``weights.npz`` (coefficients, intercept) and ``classifier.json`` (vectorizer
parameters, metrics). No pickle: loading never executes code from the model directory,
and ``HashingVectorizer`` is stateless, so its parameters rebuild it exactly.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lmforge.formats.files import atomic_path, write_json

log = logging.getLogger(__name__)


@dataclass
class VectorizerParams:
    n_features: int = 2**18
    ngram_max: int = 2
    lowercase: bool = True
    max_chars: int = 20_000  # long pages add cost, not signal


@dataclass
class TrainReport:
    n_train: int
    n_test: int
    precision: float
    recall: float
    f1: float
    accuracy: float
    roc_auc: float
    positive_rate_test: float
    extra: dict = field(default_factory=dict)


class TextClassifier:
    def __init__(
        self, params: VectorizerParams, coef: np.ndarray, intercept: float, report: dict | None = None
    ) -> None:
        self.params = params
        self.vectorizer = self._vectorizer(params)
        self.coef = coef.astype(np.float32)
        self.intercept = float(intercept)
        self.report = report or {}

    @staticmethod
    def _vectorizer(p: VectorizerParams):
        # Imported here: scikit-learn takes ~1.3 s to import, and a run whose classifiers are
        # all off (or a worker that never scores a page) should not pay it.
        from sklearn.feature_extraction.text import HashingVectorizer

        return HashingVectorizer(
            n_features=p.n_features,
            ngram_range=(1, p.ngram_max),
            lowercase=p.lowercase,
            alternate_sign=False,
            norm="l2",
            token_pattern=r"(?u)\b\w+\b",
        )

    def featurize(self, texts: Sequence[str]):
        return self.vectorizer.transform([t[: self.params.max_chars] for t in texts])

    def score(self, texts: Sequence[str]) -> np.ndarray:
        """P(positive) per text."""
        logits = self.featurize(texts) @ self.coef + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, directory: Path) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / "weights.npz") as tmp:
            with open(tmp, "wb") as f:
                np.savez_compressed(f, coef=self.coef, intercept=np.array([self.intercept]))
        write_json(directory / "classifier.json", {"vectorizer": asdict(self.params), "report": self.report})
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextClassifier:
        directory = Path(directory)
        meta_path = directory / "classifier.json"
        if not meta_path.exists():
            raise FileNotFoundError(
                f"no classifier.json in {directory}; train one with `python -m data_pipeline.quality --out {directory}`"
            )
        meta = json.loads(meta_path.read_text())
        with np.load(directory / "weights.npz", allow_pickle=False) as w:
            return cls(VectorizerParams(**meta["vectorizer"]), w["coef"], float(w["intercept"][0]), meta["report"])


def train_classifier(
    positives: Sequence[str],
    negatives: Sequence[str],
    params: VectorizerParams | None = None,
    test_size: float = 0.2,
    seed: int = 0,
    C: float = 4.0,
) -> tuple[TextClassifier, TrainReport]:
    """Fit on a stratified split and report held-out precision/recall at threshold 0.5."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_recall_fscore_support, roc_auc_score
    from sklearn.model_selection import train_test_split

    if len(positives) < 5 or len(negatives) < 5:
        raise ValueError(f"need >= 5 examples per class, got {len(positives)} positives, {len(negatives)} negatives")
    params = params or VectorizerParams()
    texts = list(positives) + list(negatives)
    labels = np.array([1] * len(positives) + [0] * len(negatives))
    x_train, x_test, y_train, y_test = train_test_split(
        texts, labels, test_size=test_size, random_state=seed, stratify=labels
    )
    vectorizer = TextClassifier._vectorizer(params)
    featurize = lambda xs: vectorizer.transform([t[: params.max_chars] for t in xs])  # noqa: E731
    model = LogisticRegression(C=C, max_iter=1000, class_weight="balanced", random_state=seed)
    model.fit(featurize(x_train), y_train)
    classifier = TextClassifier(params, model.coef_[0], model.intercept_[0])
    probs = classifier.score(x_test)
    predicted = (probs >= 0.5).astype(int)
    precision, recall, f1, _ = precision_recall_fscore_support(y_test, predicted, average="binary", zero_division=0)
    report = TrainReport(
        n_train=len(x_train),
        n_test=len(x_test),
        precision=float(precision),
        recall=float(recall),
        f1=float(f1),
        accuracy=float((predicted == y_test).mean()),
        roc_auc=float(roc_auc_score(y_test, probs)),
        positive_rate_test=float(y_test.mean()),
    )
    classifier.report = asdict(report)
    log.info(
        "classifier held-out: precision %.3f recall %.3f auc %.3f (n_test=%d)",
        report.precision,
        report.recall,
        report.roc_auc,
        report.n_test,
    )
    return classifier, report
