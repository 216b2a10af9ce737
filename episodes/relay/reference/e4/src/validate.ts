// Validation of request bodies: the first problem found gives the error code.

export type ErrorCode =
  | "malformed_json"
  | "missing_idempotency_key"
  | "missing_field"
  | "wrong_type"
  | "idempotency_conflict"
  | "not_found"
  | "method_not_allowed"
  | "payload_too_large";

/** A request the relay refuses: HTTP status and error code (the input is never echoed). */
export class Rejection extends Error {
  readonly status: number;
  readonly code: ErrorCode;

  constructor(status: number, code: ErrorCode) {
    super(code);
    this.status = status;
    this.code = code;
  }
}

export interface EventRequest {
  topic: string;
  payload: Record<string, unknown>;
  key?: string;
  version?: number;
}

export interface SubscriptionRequest {
  url: string;
  topics: string[];
}

const isObject = (value: unknown): value is Record<string, unknown> =>
  value !== null && typeof value === "object" && !Array.isArray(value);

const nonEmptyString = (value: unknown): value is string => typeof value === "string" && value.length > 0;

/** Parse a body that must be a JSON object. */
export function parseObject(raw: string): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(raw);
  } catch {
    throw new Rejection(400, "malformed_json");
  }
  if (!isObject(value)) throw new Rejection(400, "malformed_json");
  return value;
}

/** The body of `POST /events`: topic, payload, and `key` with `version` (both or neither). */
export function eventRequest(body: Record<string, unknown>): EventRequest {
  if (!("topic" in body) || !("payload" in body) || "key" in body !== "version" in body) {
    throw new Rejection(400, "missing_field");
  }
  const { topic, payload, key, version } = body;
  if (!nonEmptyString(topic) || !isObject(payload)) throw new Rejection(400, "wrong_type");
  if ("key" in body) {
    if (!nonEmptyString(key) || typeof version !== "number" || !Number.isInteger(version) || version < 1) {
      throw new Rejection(400, "wrong_type");
    }
    return { topic, payload, key, version };
  }
  return { topic, payload };
}

/** The body of `POST /subscriptions`: an http(s) URL and a non-empty list of topics. */
export function subscriptionRequest(body: Record<string, unknown>): SubscriptionRequest {
  if (!("url" in body) || !("topics" in body)) throw new Rejection(400, "missing_field");
  const { url, topics } = body;
  if (
    typeof url !== "string" ||
    !/^https?:\/\/[^\s]+$/.test(url) ||
    !Array.isArray(topics) ||
    topics.length === 0 ||
    !topics.every(nonEmptyString)
  ) {
    throw new Rejection(400, "wrong_type");
  }
  return { url, topics: [...topics] };
}

/** The body of `POST /subscriptions/{id}/replay`: optionally `from`, an event id. */
export function replayRequest(body: Record<string, unknown>): { from?: string } {
  if (!("from" in body)) return {};
  if (!nonEmptyString(body.from)) throw new Rejection(400, "wrong_type");
  return { from: body.from };
}
