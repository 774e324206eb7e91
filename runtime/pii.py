"""Personal data and secrets in text, found with precision first (the audit's `pii` check, clean's redaction).

- ``find_pii(text)`` gives (kind, start, end) spans: email, secret, card, card_test, ssn, phone, ip, address.
  A card is 13-19 digits written as a card is written (one run, or groups of 4 / Amex 4-6-5 / Diners 4-6-4
  with one kind of separator), not part of a longer number or a decimal, that passes Luhn AND has a known
  issuer prefix and length; documented test numbers are ``card_test`` (reported, never redacted). IPs are
  public addresses only (127.0.0.1 or 192.168.x.y are not personal data). SSNs are written ddd-dd-dddd with
  valid parts; street addresses are a number, capitalised words and a street type ("221 Baker Street").
- ``redact_pii(text)`` replaces the spans of ``REDACT_KINDS`` by ``[KIND]`` and says what it replaced.
"""

from __future__ import annotations

import ipaddress
import re

REDACT_KINDS = ("email", "secret", "card", "ssn", "phone", "ip", "address")
SEVERE_KINDS = ("secret", "card", "ssn")  # an audit error, not a warning

_EMAIL = re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b")
_SECRET_LITERALS = ("sk-", "sk_live_", "AKIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "xox", "AIza", "eyJ", "-----BEGIN")
_SECRET_WORDS = ("api", "secret", "passw", "token")
_SECRET = re.compile(
    r"\b(?:sk-(?:proj-)?[A-Za-z0-9_-]{20,}|AKIA[0-9A-Z]{16}|gh[pousr]_[A-Za-z0-9]{30,}"
    r"|xox[abprs]-[A-Za-z0-9-]{10,}|AIza[0-9A-Za-z_-]{35}|sk_live_[0-9A-Za-z]{20,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,})"
    r"|-----BEGIN (?:RSA |EC |OPENSSH |DSA )?PRIVATE KEY-----"
    r"|(?i:\b(?:api[_-]?key|secret|password|passwd|access[_-]?token|auth[_-]?token)\b\s*[:=]\s*['\"]?"
    r"[A-Za-z0-9_\-./+]{8,})")
# digit runs long enough to be a card, an SSN, an IP or a phone number; the precise patterns run inside them only
_DIGITS = re.compile(r"[+(]?\d[\d .()+-]{5,}\d")
_NOT_BEFORE = r"(?<![\w.,/+-])(?<!\d )"  # not a continuation of a longer number, a decimal, a path or a list
_NOT_AFTER = r"(?![\w/-]|[.,]\d| \d)"
_NUMBERS = re.compile(
    rf"(?P<card>{_NOT_BEFORE}(?:\d{{13,19}}|\d{{4}}(?P<s>[ -])\d{{4}}(?P=s)\d{{4}}(?P=s)\d{{1,4}}(?:(?P=s)\d{{3}})?"
    rf"|\d{{4}}(?P<t>[ -])\d{{6}}(?P=t)\d{{4,5}}){_NOT_AFTER})"
    r"|(?P<ssn>(?<![\w.-])(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?![\w-]|\.\d))"
    r"|(?P<ip>(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.]))"
    r"|(?P<phone>(?<![\w+])(?:\+\d{1,3}[ .-]?)?(?:\(\d{3}\)|\d{3})[ .-]\d{3}[ .-]\d{4}(?!\d)"
    r"|(?<![\w+])\+\d{1,3}[ .-]?\d{2,4}(?:[ .-]?\d{2,4}){2,3}(?!\d))"
)
_STREET_TYPES = ("Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|"
                 "Parkway|Pkwy|Circle|Highway|Hwy|Square|Sq")
_ADDRESS = re.compile(rf"(?<![\w.,-])\d{{1,5}}(?:[A-Z])?\s+(?:[NSEW]\.?\s+)?(?:[A-Z][a-z]+\s+){{1,3}}"
                      rf"(?:{_STREET_TYPES})\b\.?")
_ADDRESS_HINT = re.compile(rf"[a-z]\s+(?:{_STREET_TYPES})\b")
# Documented test card numbers (Stripe, Adyen, Braintree, PayPal docs): shown in tutorials, never real.
TEST_CARDS = frozenset({
    "4111111111111111", "4242424242424242", "4012888888881881", "4222222222222", "4000056655665556",
    "4000000000000002", "4000000000009995", "4000002500003155", "5555555555554444", "5105105105105100",
    "2223003122003222", "5200828282828210", "378282246310005", "371449635398431", "378734493671000",
    "6011111111111117", "6011000990139424", "6011000400000000", "3530111333300000", "3566002020360505",
    "30569309025904", "38520000023237", "36227206271667", "6200000000000005", "4917610000000000003",
    "4988438843884305", "5454545454545454", "4444333322221111", "4035501000000008", "6759649826438453",
})


def luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = ord(ch) - 48
        if alt:
            d *= 2
            if d > 9:
                d -= 9
        total += d
        alt = not alt
    return total % 10 == 0


def card_issuer(digits: str) -> str | None:
    """The card network whose prefix and length these digits have, or None."""
    n, p2, p4 = len(digits), int(digits[:2]), int(digits[:4])
    if digits[0] == "4" and n in (13, 16, 19):
        return "visa"
    if (51 <= p2 <= 55 or 2221 <= p4 <= 2720) and n == 16:
        return "mastercard"
    if p2 in (34, 37) and n == 15:
        return "amex"
    if (digits.startswith("6011") or 644 <= int(digits[:3]) <= 649 or p2 == 65) and 16 <= n <= 19:
        return "discover"
    if 3528 <= p4 <= 3589 and 16 <= n <= 19:
        return "jcb"
    if (300 <= int(digits[:3]) <= 305 or p2 in (36, 38, 39) or p4 == 3095) and 14 <= n <= 19:
        return "diners"
    if p2 == 62 and 16 <= n <= 19:
        return "unionpay"
    if 2200 <= p4 <= 2204 and 16 <= n <= 19:
        return "mir"
    if (p2 in (50, 56, 57, 58) or p4 in (6304, 6759, 6761, 6762, 6763)) and 13 <= n <= 19:
        return "maestro"
    return None


def _card_kind(text: str, start: int, raw: str) -> str | None:
    digits = re.sub(r"\D", "", raw)
    if not 13 <= len(digits) <= 19 or set(digits) <= {"0", "1"} or len(set(digits)) == 1:
        return None  # binary strings and one repeated digit are not cards
    if not luhn_ok(digits) or card_issuer(digits) is None:
        return None
    if "isbn" in text[max(0, start - 24):start].lower():
        return None
    return "card_test" if digits in TEST_CARDS else "card"


def _secret_hint(text: str) -> bool:
    """Cheap substring tests (memchr speed) before the secret patterns run. Plain loops: this runs on every row,
    and a generator in any() took twice as long."""
    for k in _SECRET_LITERALS:
        if k in text:
            return True
    low = text.lower()
    for k in _SECRET_WORDS:
        if k in low:
            return True
    return False


def _public_ip(raw: str) -> bool:
    try:
        return ipaddress.ip_address(raw).is_global
    except ValueError:
        return False


def find_pii(text: str) -> list[tuple[str, int, int]]:
    """(kind, start, end) spans of personal data and secrets, in text order, none inside another."""
    out = []
    if "@" in text:
        out += [("email", m.start(), m.end()) for m in _EMAIL.finditer(text)]
    if _secret_hint(text):
        out += [("secret", m.start(), m.end()) for m in _SECRET.finditer(text)]
    for span in _DIGITS.finditer(text):
        lo, hi = max(0, span.start() - 2), min(len(text), span.end() + 2)
        for m in _NUMBERS.finditer(text, lo, hi):
            kind = m.lastgroup
            if m.group("card") is not None:
                kind = _card_kind(text, m.start(), m.group())
            elif kind == "ip" and not _public_ip(m.group()):
                kind = None
            if kind:
                out.append((kind, m.start(), m.end()))
    if _ADDRESS_HINT.search(text):
        out += [("address", m.start(), m.end()) for m in _ADDRESS.finditer(text)]
    out.sort(key=lambda x: (x[1], -x[2]))
    merged: list[tuple[str, int, int]] = []
    for item in out:  # drop spans inside an earlier one (a phone number inside a secret)
        if merged and item[1] < merged[-1][2]:
            continue
        merged.append(item)
    return merged


def redact_pii(text: str) -> tuple[str, list[dict]]:
    """The text with each high-confidence span (``REDACT_KINDS``) replaced by ``[KIND]``, and what was replaced:
    kind, start and end in the original text, and a masked view (first and last two characters)."""
    spans = [s for s in find_pii(text) if s[0] in REDACT_KINDS]
    done = []
    for kind, start, end in reversed(spans):
        original = text[start:end]
        text = text[:start] + f"[{kind.upper()}]" + text[end:]
        done.append({"kind": kind, "start": start, "end": end, "masked": mask(original)})
    return text, done[::-1]


def mask(s: str) -> str:
    return s[:2] + "…" + s[-2:] if len(s) > 6 else "…"
