// Personal data in event payloads: email addresses and card numbers are masked before an event
// is stored, logged or delivered.

/** An email address: local part, `@`, a domain of at least two dot-separated labels. */
const EMAIL = /[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+/g;

/** A card number: 16 digits, optionally in groups of four joined by one space or one dash. */
const CARD = /(?<!\d)\d{4}([ -]?)\d{4}\1\d{4}\1\d{4}(?!\d)/g;

/** `jane.doe@example.org` -> `j***@example.org`. */
export function maskEmail(email: string): string {
  const at = email.lastIndexOf("@");
  return `${email.slice(0, 1)}***@${email.slice(at + 1)}`;
}

/** `4111 1111 1111 1234` -> `****1234`. */
export function maskCard(card: string): string {
  return `****${card.replace(/\D/g, "").slice(-4)}`;
}

/** Mask every email address, then every card number, in one string. */
export function redactText(text: string): string {
  return text.replace(EMAIL, maskEmail).replace(CARD, maskCard);
}

/**
 * A copy of a JSON value with every string (object values and array items, at any depth; not
 * object keys) redacted.
 */
export function redact(value: unknown): unknown {
  if (typeof value === "string") return redactText(value);
  if (Array.isArray(value)) return value.map(redact);
  if (value !== null && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const [name, item] of Object.entries(value)) out[name] = redact(item);
    return out;
  }
  return value;
}
