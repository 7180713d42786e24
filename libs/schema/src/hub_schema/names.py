"""The one way the hub compares company names and e-mail addresses.

Identity pairs accounts with client companies when they are created (S13) and linking matches clients to
accounts on request (S21/S22); both read the names through these functions, so the two services cannot
disagree about the same pair (「株式会社サンプル」, 「サンプル株式会社」 and 「ｻﾝﾌﾟﾙ(株)」 are one company to both).
"""

from __future__ import annotations

import re
import unicodedata

_JAPANESE_FORMS = ("株式会社", "有限会社", "合同会社", "(株)", "(有)", "(同)")
"""Company forms written inside the name (no spaces in Japanese); NFKC has already turned ㈱ into (株)."""

_WORD_FORMS = frozenset({
    "incorporated", "inc", "corporation", "corp", "company", "co", "limited", "ltd", "llc", "gmbh", "kk", "plc",
})
"""Company forms written as a word of their own."""

_PUNCTUATION = re.compile(r"[^\w\s]")


def normalise_company_name(name: str | None) -> str:
    """NFKC (full-width → half-width, ㈱ → (株)), case-folded, company forms and punctuation dropped, spaces
    collapsed. '' when nothing is left to compare on (a name that is only a company form)."""
    if not name:
        return ""
    s = unicodedata.normalize("NFKC", name).casefold()
    for form in _JAPANESE_FORMS:
        s = s.replace(form, " ")
    s = _PUNCTUATION.sub(" ", s)
    return " ".join(w for w in s.split() if w not in _WORD_FORMS)


def normalise_email(email: str | None) -> str | None:
    """NFKC (a full-width ＠ or letter typed by an IME), trimmed, lower-case; None for a missing or blank address."""
    if email is None:
        return None
    value = unicodedata.normalize("NFKC", email).strip().lower()
    return value or None
