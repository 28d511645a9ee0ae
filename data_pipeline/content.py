"""Content filters: PII, toxicity and malware/exploit text.

Each filter returns a removal reason, or rewrites the text (PII redaction) and records
what it changed in ``doc.metadata``; the funnel aggregates both.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

from lmforge.formats.corpus import Document


# --------------------------------------------------------------------------- PII
def luhn_valid(digits: str) -> bool:
    """Luhn mod-10 check (ISO/IEC 7812-1), the checksum every payment card number carries."""
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


EMAIL_RE = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
# Addresses written to dodge harvesters: "x (at) y (dot) de", "x [at] y [dot] com", "x AT y DOT org",
# "x @ y.com". Plain lowercase " at "/" dot " is left alone: it is ordinary English far more often.
_AT = r"(?:\s*[(\[{<]\s*(?i:at)\s*[)\]}>]\s*|\s+AT\s+|\s*@\s*)"
_DOT = r"(?:\s*[(\[{<]\s*(?i:dot)\s*[)\]}>]\s*|\s+DOT\s+|\.)"
OBFUSCATED_EMAIL_RE = re.compile(
    rf"(?<![\w.%+-])[A-Za-z0-9._%+-]+{_AT}[A-Za-z0-9-]+(?:{_DOT}[A-Za-z0-9-]+)*{_DOT}[A-Za-z]{{2,}}\b"
)
# user:password@ in a URL (RFC 3986 userinfo); the scheme and host stay, the secret goes.
URL_CREDENTIALS_RE = re.compile(r"\b([A-Za-z][A-Za-z0-9+.-]*://)[^\s/?#@:]+:[^\s/?#@]+(?=@)")
# 13-19 digits, optionally grouped by single spaces or dashes (printed card formats).
CARD_RE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
# NANP (+1 555 123 4567, (555) 123-4567) and E.164-style international numbers.
PHONE_RE = re.compile(
    r"(?<![\w+])(?:\+1[ .-]?)?\(?\b[2-9]\d{2}\)?[ .-]\d{3}[ .-]\d{4}\b"
    r"|(?<![\w+])\+[1-9]\d{0,2}(?:[ .-]?\d{2,4}){2,5}\b"
)
IPV4_RE = re.compile(r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b")
IPV6_RE = re.compile(r"\b(?:[0-9A-Fa-f]{1,4}:){7}[0-9A-Fa-f]{1,4}\b")
# US SSN (excluding never-issued 000/666/9xx areas), UK National Insurance number.
SSN_RE = re.compile(r"\b(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}\b")
NINO_RE = re.compile(r"\b(?!BG|GB|NK|KN|TN|NT|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z] ?\d{2} ?\d{2} ?\d{2} ?[A-D]\b")


PII_PREFILTERS = {
    "email": re.compile(r"@|[(\[{<]\s*(?i:at)\s*[)\]}>]|\sAT\s").search,
    "credentials": lambda t: "://" in t and "@" in t,
    "card": re.compile(r"\d\d\d\d[ -]?\d\d\d\d[ -]?\d\d\d").search,
    "ssn": re.compile(r"\d-\d\d-\d").search,
    "nino": re.compile(r"\d\d ?\d\d ?\d\d ?[A-D]\b").search,
    "ip": re.compile(r"\d\.\d+\.\d+\.\d|:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:").search,
    "phone": re.compile(r"\d\d\d[ .-]\d\d\d\d|\+\d").search,
}


@dataclass
class PiiConfig:
    enabled: bool = True
    mode: str = "redact"  # redact | drop
    kinds: list[str] = field(default_factory=lambda: ["credentials", "email", "card", "ssn", "nino", "phone", "ip"])
    keep_private_ips: bool = True  # 10.x/192.168.x/127.x are not personal data


def _is_private_ip(ip: str) -> bool:
    a, b, *_ = (int(x) for x in ip.split("."))
    return a in (10, 127, 0) or (a == 192 and b == 168) or (a == 172 and 16 <= b <= 31)


class PiiFilter:
    name = "pii"

    def __init__(self, cfg: PiiConfig, domains: list[str] | None = None) -> None:
        self.domains = domains
        if cfg.mode not in ("redact", "drop"):
            raise ValueError(f"content.pii.mode must be 'redact' or 'drop', got {cfg.mode!r}")
        self.cfg = cfg

    def find(self, text: str) -> tuple[str, Counter]:
        """Return the redacted text and counts per PII kind. Order matters: cards before phones."""
        counts: Counter = Counter()

        def sub(kind: str, regex: re.Pattern, keep=lambda m: False, prefix: bool = False) -> None:
            nonlocal text

            def repl(m: re.Match) -> str:
                if keep(m.group(0)):
                    return m.group(0)
                counts[kind] += 1
                return f"{m.group(1) if prefix else ''}<{kind.upper()}>"

            text = regex.sub(repl, text)

        # Cheap necessary conditions first: most pages contain no PII, and the full patterns
        # (lookarounds, alternations) cost 10-50x more per byte than these scans.
        kinds = {k for k in self.cfg.kinds if PII_PREFILTERS[k](text)}
        if "credentials" in kinds:  # before e-mail: "user:pw@host.com" would read as an address
            sub("credentials", URL_CREDENTIALS_RE, prefix=True)
        if "email" in kinds:
            sub("email", EMAIL_RE)
            sub("email", OBFUSCATED_EMAIL_RE)
        if "card" in kinds:
            sub("card", CARD_RE, keep=lambda s: not luhn_valid(re.sub(r"\D", "", s)))
        if "ssn" in kinds:
            sub("ssn", SSN_RE)
        if "nino" in kinds:
            sub("nino", NINO_RE)
        if "ip" in kinds:
            sub("ip", IPV4_RE, keep=lambda s: self.cfg.keep_private_ips and _is_private_ip(s))
            sub("ip", IPV6_RE)
        if "phone" in kinds:
            sub("phone", PHONE_RE)
        return text, counts

    def __call__(self, doc: Document) -> str | None:
        redacted, counts = self.find(doc.text)
        if "credentials" in self.cfg.kinds and "@" in doc.url and URL_CREDENTIALS_RE.search(doc.url):
            counts["credentials"] += 1  # the record's own URL is written to the corpus too
            if self.cfg.mode == "redact":
                doc.url = URL_CREDENTIALS_RE.sub(r"\1<CREDENTIALS>", doc.url)
        if not counts:
            return None
        if self.cfg.mode == "drop":
            return "pii_" + "_".join(sorted(counts))
        doc.text = redacted
        doc.metadata["pii_redacted"] = dict(sorted(counts.items()))
        return None


# ----------------------------------------------------------------- malware/exploits
# The EICAR anti-virus test file (eicar.org), matched on its distinctive tail so that
# escaped copies in HTML still hit.
MALWARE_SIGNATURES: dict[str, re.Pattern] = {
    "eicar_test_string": re.compile(r"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!"),
    "shellcode_nop_sled": re.compile(r"(?:\\x90){8,}", re.I),
    "shellcode_hex_bytes": re.compile(r"(?:\\x[0-9a-f]{2}){32,}", re.I),
    "shellcode_execve_binsh": re.compile(r"\\x2f\\x62\\x69\\x6e\\x2f\\x73\\x68|/bin/sh\\x00|execve\(\"/bin/sh\"", re.I),
    "log4shell_jndi": re.compile(r"\$\{jndi:(?:ldap|rmi|dns)s?://", re.I),
    "powershell_encoded": re.compile(
        r"powershell(?:\.exe)?\s+(?:-\w+\s+)*-e(?:nc|ncodedcommand)?\s+[A-Za-z0-9+/=]{40,}", re.I
    ),
    "js_eval_unescape": re.compile(r"eval\s*\(\s*(?:unescape|atob|String\.fromCharCode)\s*\(", re.I),
    "sql_injection_tautology": re.compile(r"'\s*or\s+'?1'?\s*=\s*'?1'?\s*(?:--|#|/\*)", re.I),
    "path_traversal_passwd": re.compile(r"(?:\.\./){3,}etc/passwd"),
    "metasploit_payload": re.compile(r"\b(?:msfvenom|meterpreter/reverse_tcp|windows/shell_reverse_tcp)\b", re.I),
    "reverse_shell": re.compile(r"bash\s+-i\s+>&\s*/dev/tcp/\d", re.I),
}


MALWARE_HINTS: dict[str, tuple[str, ...]] = {
    "eicar_test_string": ("eicar-standard",),
    "shellcode_nop_sled": ("\\x90",),
    "shellcode_hex_bytes": ("\\x",),
    "shellcode_execve_binsh": ("\\x2f", "/bin/sh"),
    "log4shell_jndi": ("${jndi:",),
    "powershell_encoded": ("powershell",),
    "js_eval_unescape": ("eval",),
    "sql_injection_tautology": ("1",),
    "path_traversal_passwd": ("../../../",),
    "metasploit_payload": ("msfvenom", "meterpreter", "shell_reverse_tcp"),
    "reverse_shell": ("/dev/tcp/",),
}


@dataclass
class MalwareConfig:
    enabled: bool = True


class MalwareFilter:
    name = "malware"

    def __init__(self, cfg: MalwareConfig, domains: list[str] | None = None) -> None:
        self.cfg = cfg
        self.domains = domains

    def __call__(self, doc: Document) -> str | None:
        lowered = doc.text.lower()
        for name, regex in MALWARE_SIGNATURES.items():
            # A literal every match must contain: a substring test is ~50x cheaper than the regex.
            if any(hint in lowered for hint in MALWARE_HINTS[name]) and regex.search(doc.text):
                return f"malware_{name}"
        return None


# ---------------------------------------------------------------------- toxicity
@dataclass
class ToxicityConfig:
    enabled: bool = True
    word_list: str | None = None  # None: the list shipped in data_pipeline/resources
    max_flagged_word_ratio: float = 0.01  # share of words on the list
    min_flagged_words: int = 3
    classifier_path: str | None = None  # a TextClassifier dir; trained by the pipeline when null
    train_classifier: bool = True
    classifier_threshold: float = 0.8
    classifier_max_chars: int = 4000  # abuse shows early; long pages cost time, not recall


@lru_cache(maxsize=4)
def load_word_list(path: str | None) -> frozenset[str]:
    text = (
        Path(path).read_text()
        if path
        else resources.files("data_pipeline.resources").joinpath("toxicity_words.txt").read_text()
    )
    return frozenset(w.strip().lower() for w in text.splitlines() if w.strip() and not w.startswith("#"))


TOKEN_RE = re.compile(r"[a-z']+")


class ToxicityFilter:
    """Word-list ratio (cheap, explainable) plus a hashed-n-gram classifier for phrasing."""

    name = "toxicity"

    def __init__(self, cfg: ToxicityConfig, classifier=None, domains: list[str] | None = None) -> None:
        self.cfg = cfg
        self.domains = domains
        self.words = load_word_list(cfg.word_list)
        self.classifier = classifier

    def __call__(self, doc: Document) -> str | None:
        tokens = TOKEN_RE.findall(doc.text.lower())
        if tokens:
            flagged = sum(t in self.words for t in tokens)
            if flagged >= self.cfg.min_flagged_words and flagged / len(tokens) > self.cfg.max_flagged_word_ratio:
                return "toxicity_word_list"
        if self.classifier is not None:
            score = float(self.classifier.score([doc.text[: self.cfg.classifier_max_chars]])[0])
            doc.metadata["toxicity_score"] = round(score, 4)
            if score >= self.cfg.classifier_threshold:
                return "toxicity_classifier"
        return None


@dataclass
class ContentConfig:
    domains: list[str] | None = None
    pii: PiiConfig = field(default_factory=PiiConfig)
    toxicity: ToxicityConfig = field(default_factory=ToxicityConfig)
    malware: MalwareConfig = field(default_factory=MalwareConfig)
