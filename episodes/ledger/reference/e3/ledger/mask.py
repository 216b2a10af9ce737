"""Masking of personal data: customer emails and card numbers.

Only masked forms may ever be written to the state directory, stdout or stderr.
"""

_DIGITS = frozenset("0123456789")


def mask_email(email):
    """Mask an email address: ``jane@example.com`` -> ``j***@example.com``.

    The first character of the local part is kept, the rest becomes ``***``;
    the domain is kept. A value without ``@`` is masked entirely as ``***``.
    """
    local, at, domain = str(email).rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_card(card):
    """Mask a card number: ``4111111111111111`` -> ``****1111`` (last four digits kept)."""
    digits = [char for char in str(card) if char in _DIGITS]
    return "****" + "".join(digits[-4:])
