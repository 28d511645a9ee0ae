"""SQLite storage of the arena: model responses, blind pair assignments and votes.

Model identities live only here. The page and its API see an opaque random token per shown
pair; the token maps to (prompt, left model, right model) server-side.

Ballot stuffing is closed at this layer: annotators are an invite list (`add_annotator` returns
a secret token, only its SHA-256 is stored), an annotator holds at most one open pair at a time
(asking again returns the same pair), and an annotator judges each (prompt, model pair) once.
"""

from __future__ import annotations

import hashlib
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
CREATE TABLE IF NOT EXISTS annotators (name TEXT PRIMARY KEY, token_sha256 TEXT UNIQUE, created REAL);
"""
# One ballot per annotator per (prompt, model pair). A database written before this rule may hold
# duplicates; then the index is not created, the store still refuses new ones and `votes()` counts
# only the first of each.
ONE_BALLOT = "CREATE UNIQUE INDEX IF NOT EXISTS one_ballot ON votes (annotator, prompt_id, model_a, model_b)"
NAME_CHARS = set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-@")


def _sha256(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ArenaStore:
    def __init__(self, path: str | Path, seed: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        self._db.executescript(SCHEMA)
        try:
            self._db.execute(ONE_BALLOT)
        except sqlite3.IntegrityError:
            pass
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

    # ------------------------------------------------------------------ annotators
    def add_annotator(self, name: str, reissue: bool = False) -> str:
        """Invite `name`; returns their secret token (shown once: only its hash is stored).
        `reissue` replaces a lost token, which stops working."""
        if not name or len(name) > 64 or not set(name) <= NAME_CHARS:
            raise ValueError(f"annotator name {name!r}: use 1-64 letters, digits and . _ - @")
        token = secrets.token_urlsafe(24)
        with self._lock:
            exists = self._db.execute("SELECT 1 FROM annotators WHERE name = ?", (name,)).fetchone()
            if exists and not reissue:
                raise ValueError(f"annotator {name!r} is already invited (--reissue replaces the token)")
            self._db.execute("INSERT OR REPLACE INTO annotators VALUES (?, ?, ?)", (name, _sha256(token), time.time()))
            self._db.commit()
        return token

    def annotator_for(self, token: str) -> str | None:
        """The invited annotator holding `token`, None for anything else."""
        if not token:
            return None
        with self._lock:  # one sqlite connection shared by the server's threads
            row = self._db.execute("SELECT name FROM annotators WHERE token_sha256 = ?", (_sha256(token),)).fetchone()
        return row[0] if row else None

    def annotators(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT name FROM annotators ORDER BY name")]

    # ------------------------------------------------------------------ blind pairs
    def next_pair(self, annotator: str) -> dict | None:
        """A pair this annotator has not judged: {token, prompt, left, right}; None when done.
        An annotator's open pair (issued, not voted) is returned again, so asking repeatedly
        yields one ballot, not many. Among unjudged (prompt, model pair)s, the least-voted come
        first (balanced coverage)."""
        with self._lock:
            done = {
                (p, *sorted((a, b)))
                for p, a, b in self._db.execute(
                    "SELECT prompt_id, model_a, model_b FROM votes WHERE annotator = ?", (annotator,)
                )
            }
            open_pairs = self._db.execute(
                "SELECT token, prompt_id, left_model, right_model FROM assignments WHERE annotator = ? "
                "AND token NOT IN (SELECT token FROM votes) ORDER BY created DESC",
                (annotator,),
            ).fetchall()
            for token, prompt_id, left, right in open_pairs:
                if (prompt_id, *sorted((left, right))) not in done:
                    return self._shown(token, prompt_id, left, right)
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
            return self._shown(token, prompt_id, left, right)

    def _shown(self, token: str, prompt_id: str, left: str, right: str) -> dict:
        rows = dict(
            (model, (prompt, response))
            for prompt, model, response in self._db.execute(
                "SELECT prompt, model, response FROM responses WHERE prompt_id = ? AND model IN (?, ?)",
                (prompt_id, left, right),
            )
        )
        return {"token": token, "prompt": rows[left][0], "left": rows[left][1], "right": rows[right][1]}

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
            judged = self._db.execute(
                "SELECT 1 FROM votes WHERE annotator = ? AND prompt_id = ? AND model_a = ? AND model_b = ?",
                (annotator, prompt_id, model_a, model_b),
            ).fetchone()
            if judged:
                raise PermissionError("this pair has already been judged by this annotator")
            outcome = {
                "left": "a" if left == model_a else "b",
                "right": "a" if right == model_a else "b",
                "tie": "tie",
                "both_bad": "both_bad",
            }[choice]
            self._db.execute(
                "INSERT INTO votes VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (token, annotator, prompt_id, model_a, model_b, outcome, left, time.time()),
            )
            self._db.commit()

    def votes(self) -> list[dict]:
        """One ballot per annotator per (prompt, model pair): the first cast."""
        cols = ("annotator", "prompt_id", "model_a", "model_b", "outcome")
        first = "SELECT MIN(rowid) FROM votes GROUP BY annotator, prompt_id, model_a, model_b"
        query = f"SELECT {', '.join(cols)} FROM votes WHERE rowid IN ({first}) ORDER BY created"
        return [dict(zip(cols, r)) for r in self._db.execute(query)]
