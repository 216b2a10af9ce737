"""Masking of customer personal data: only these forms are ever kept or shown."""


def mask_email(email: str) -> str:
    """``jane.doe@example.org`` -> ``j***@example.org``."""
    local, at, domain = email.rpartition("@")
    if not at:
        return "***"
    return f"{local[:1]}***@{domain}"


def mask_name(name: str) -> str:
    """``Jane van Doe`` -> ``J. v. D.``: the initial of each word."""
    return " ".join(f"{word[0]}." for word in name.split())


def mask_phone(phone: str) -> str:
    """``+44 7700 900123`` -> ``***23``: the last two digits only."""
    digits = [c for c in phone if c.isdigit()]
    return "***" + "".join(digits[-2:])


def mask_customer(customer: dict) -> dict:
    """The masked customer: name, email and phone; every other member is dropped."""
    return {
        "name": mask_name(customer["name"]),
        "email": mask_email(customer["email"]),
        "phone": mask_phone(customer["phone"]),
    }
