// The durable state of the relay: an append-only journal, `DIR/journal.jsonl`, one JSON record
// per line, written synchronously before the relay answers or moves on. On start the state is
// rebuilt by reading the journal from the top, so a relay killed at any moment (kill -9)
// restarts exactly where its last record left it. Payloads are stored already redacted.

import { appendFileSync, closeSync, ftruncateSync, mkdirSync, openSync, readFileSync } from "node:fs";
import { join } from "node:path";

export type DeliveryState = "pending" | "delivered" | "dead";

export interface Subscription {
  id: string;
  url: string;
  topics: string[];
}

export interface RelayEvent {
  id: string;
  idempotencyKey: string;
  topic: string;
  /** The payload with personal data masked. */
  payload: unknown;
  key?: string;
  version?: number;
  acceptedAt: string;
  status: "accepted" | "stale";
  /** Delivery state per subscription the event matched when it was accepted. */
  deliveries: Map<string, DeliveryState>;
}

export interface DeadLetter {
  event: string;
  subscription: string;
  attempts: number;
}

interface EventRecord {
  type: "event";
  id: string;
  idempotency_key: string;
  topic: string;
  payload: unknown;
  key?: string;
  version?: number;
  accepted_at: string;
  status: "accepted" | "stale";
  subscriptions: string[];
}

type JournalRecord =
  | { type: "subscription"; id: string; url: string; topics: string[] }
  | EventRecord
  | { type: "delivered"; event: string; subscription: string }
  | { type: "dead"; event: string; subscription: string; attempts: number };

export class Store {
  readonly subscriptions = new Map<string, Subscription>();
  readonly events = new Map<string, RelayEvent>();
  readonly byIdempotencyKey = new Map<string, RelayEvent>();
  /** Greatest version accepted so far, per ordering key. */
  readonly newestVersion = new Map<string, number>();
  readonly deadLetters: DeadLetter[] = [];
  /** Per subscription, the events delivered to it, in the order they were delivered. */
  readonly deliveredOrder = new Map<string, string[]>();
  private readonly fd: number;

  constructor(dir: string) {
    mkdirSync(dir, { recursive: true });
    const path = join(dir, "journal.jsonl");
    this.fd = openSync(path, "a+");
    let text = "";
    try {
      text = readFileSync(path, "utf8");
    } catch {
      text = "";
    }
    const complete = text.lastIndexOf("\n") + 1;
    if (complete < Buffer.byteLength(text)) {
      // A record cut short by a kill: it was never acknowledged, drop it.
      ftruncateSync(this.fd, Buffer.byteLength(text.slice(0, complete)));
    }
    for (const line of text.slice(0, complete).split("\n")) {
      if (line.trim()) this.apply(JSON.parse(line) as JournalRecord);
    }
  }

  close(): void {
    closeSync(this.fd);
  }

  private write(record: JournalRecord): void {
    appendFileSync(this.fd, JSON.stringify(record) + "\n");
    this.apply(record);
  }

  private apply(record: JournalRecord): void {
    switch (record.type) {
      case "subscription":
        this.subscriptions.set(record.id, { id: record.id, url: record.url, topics: record.topics });
        this.deliveredOrder.set(record.id, []);
        break;
      case "event": {
        const event: RelayEvent = {
          id: record.id,
          idempotencyKey: record.idempotency_key,
          topic: record.topic,
          payload: record.payload,
          acceptedAt: record.accepted_at,
          status: record.status,
          deliveries: new Map(record.subscriptions.map((sub) => [sub, "pending" as DeliveryState])),
        };
        if (record.key !== undefined) {
          event.key = record.key;
          event.version = record.version;
          const newest = this.newestVersion.get(record.key) ?? 0;
          this.newestVersion.set(record.key, Math.max(newest, record.version ?? 0));
        }
        this.events.set(event.id, event);
        this.byIdempotencyKey.set(event.idempotencyKey, event);
        break;
      }
      case "delivered":
        this.events.get(record.event)?.deliveries.set(record.subscription, "delivered");
        this.deliveredOrder.get(record.subscription)?.push(record.event);
        break;
      case "dead":
        this.events.get(record.event)?.deliveries.set(record.subscription, "dead");
        this.deadLetters.push({ event: record.event, subscription: record.subscription, attempts: record.attempts });
        break;
    }
  }

  addSubscription(url: string, topics: string[]): Subscription {
    const id = `sub-${this.subscriptions.size + 1}`;
    this.write({ type: "subscription", id, url, topics });
    return this.subscriptions.get(id)!;
  }

  /** Record an accepted (or stale) event; a stale one matches no subscription. */
  addEvent(fields: {
    idempotencyKey: string;
    topic: string;
    payload: unknown;
    key?: string;
    version?: number;
    stale: boolean;
  }): RelayEvent {
    const id = `evt-${this.events.size + 1}`;
    const subscriptions = fields.stale
      ? []
      : [...this.subscriptions.values()].filter((sub) => sub.topics.includes(fields.topic)).map((sub) => sub.id);
    const record: EventRecord = {
      type: "event",
      id,
      idempotency_key: fields.idempotencyKey,
      topic: fields.topic,
      payload: fields.payload,
      accepted_at: new Date().toISOString(),
      status: fields.stale ? "stale" : "accepted",
      subscriptions,
    };
    if (fields.key !== undefined) {
      record.key = fields.key;
      record.version = fields.version;
    }
    this.write(record);
    return this.events.get(id)!;
  }

  markDelivered(event: string, subscription: string): void {
    this.write({ type: "delivered", event, subscription });
  }

  markDead(event: string, subscription: string, attempts: number): void {
    this.write({ type: "dead", event, subscription, attempts });
  }

  /** The events still to be delivered to a subscription, in the order they were accepted. */
  pendingFor(subscription: string): RelayEvent[] {
    return [...this.events.values()].filter((event) => event.deliveries.get(subscription) === "pending");
  }

  /** Counts of a subscription's deliveries by state. */
  countsFor(subscription: string): Record<DeliveryState, number> {
    const counts = { pending: 0, delivered: 0, dead: 0 };
    for (const event of this.events.values()) {
      const state = event.deliveries.get(subscription);
      if (state) counts[state] += 1;
    }
    return counts;
  }
}
