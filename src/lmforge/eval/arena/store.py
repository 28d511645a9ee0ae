"""SQLite storage of the arena: model responses, blind pair assignments and votes.

Model identities live only here. The page and its API see an opaque random token per shown
pair; the token maps to (prompt, left model, right model) server-side.
"""

from __future__ import annotations

import json
import random
import secrets
import sqlite3
import threading
import time
from pathlib import Path

CHOICES = ("left", "right", "tie", "both_bad")
SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (prompt_id TEXT, prompt TEXT, model TEXT, response TEXT,
                                      PRIMARY KEY (prompt_id, model));
CREATE TABLE IF NOT EXISTS assignments (token TEXT PRIMARY KEY, prompt_id TEXT, left_model TEXT,
                                        right_model TEXT, annotator TEXT, created REAL);
CREATE TABLE IF NOT EXISTS votes (token TEXT PRIMARY KEY, annotator TEXT, prompt_id TEXT, model_a TEXT,
                                  model_b TEXT, outcome TEXT, left_model TEXT, created REAL);
"""


class ArenaStore:
    def __init__(self, path: str | Path, seed: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()
        self._rng = random.Random(seed) if seed is not None else random.SystemRandom()

    # ------------------------------------------------------------------ responses
    def add_responses(self, rows: list[dict]) -> int:
        """rows: {prompt_id, prompt, model, response}."""
        with self._lock:
            self._db.executemany(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?, ?)",
                [(str(r["prompt_id"]), r["prompt"], r["model"], r["response"]) for r in rows],
            )
            self._db.commit()
        return len(rows)

    def load_jsonl(self, path: str | Path, model: str | None = None) -> int:
        """A JSONL of {prompt_id, prompt, response[, model]}; `model` defaults to the file stem."""
        rows = []
        for line in Path(path).read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append({**row, "model": row.get("model") or model or Path(path).stem})
        return self.add_responses(rows)

    def models(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT DISTINCT model FROM responses ORDER BY model")]

    # ------------------------------------------------------------------ blind pairs
    def next_pair(self, annotator: str) -> dict | None:
        """A pair this annotator has not judged: {token, prompt, left, right}; None when done.
        Among unjudged (prompt, model pair)s, the least-voted come first (balanced coverage)."""
        with self._lock:
            done = {
                (p, *sorted((a, b)))
                for p, a, b in self._db.execute(
                    "SELECT prompt_id, model_a, model_b FROM votes WHERE annotator = ?", (annotator,)
                )
            }
            by_prompt: dict[str, dict[str, str]] = {}
            prompts = {}
            for prompt_id, prompt, model, response in self._db.execute("SELECT * FROM responses"):
                by_prompt.setdefault(prompt_id, {})[model] = response
                prompts[prompt_id] = prompt
            counts = {}
            for p, a, b in self._db.execute("SELECT prompt_id, model_a, model_b FROM votes"):
                key = (p, *sorted((a, b)))
                counts[key] = counts.get(key, 0) + 1
            candidates = []
            for prompt_id, responses in by_prompt.items():
                names = sorted(responses)
                for i, a in enumerate(names):
                    for b in names[i + 1 :]:
                        if (prompt_id, a, b) not in done:
                            candidates.append((counts.get((prompt_id, a, b), 0), self._rng.random(), prompt_id, a, b))
            if not candidates:
                return None
            _, _, prompt_id, a, b = min(candidates)
            left, right = (a, b) if self._rng.random() < 0.5 else (b, a)
            token = secrets.token_urlsafe(18)
            self._db.execute(
                "INSERT INTO assignments VALUES (?, ?, ?, ?, ?, ?)",
                (token, prompt_id, left, right, annotator, time.time()),
            )
            self._db.commit()
            return {
                "token": token,
                "prompt": prompts[prompt_id],
                "left": by_prompt[prompt_id][left],
                "right": by_prompt[prompt_id][right],
            }

    def record_vote(self, token: str, choice: str, annotator: str) -> None:
        if choice not in CHOICES:
            raise ValueError(f"vote must be one of {CHOICES}, got {choice!r}")
        with self._lock:
            row = self._db.execute(
                "SELECT prompt_id, left_model, right_model, annotator FROM assignments WHERE token = ?", (token,)
            ).fetchone()
            if row is None:
                raise KeyError("unknown or expired pair token")
            prompt_id, left, right, assigned_to = row
            if assigned_to != annotator:
                raise PermissionError("this pair was assigned to another annotator")
            model_a, model_b = sorted((left, right))
            outcome = {
                "left": "a" if left == model_a else "b",
                "right": "a" if right == model_a else "b",
                "tie": "tie",
                "both_bad": "both_bad",
            }[choice]
            self._db.execute(
                "INSERT OR REPLACE INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token, annotator, prompt_id, model_a, model_b, outcome, left, time.time()),
            )
            self._db.commit()

    def votes(self) -> list[dict]:
        cols = ("annotator", "prompt_id", "model_a", "model_b", "outcome")
        return [dict(zip(cols, r)) for r in self._db.execute(f"SELECT {', '.join(cols)} FROM votes ORDER BY created")]
