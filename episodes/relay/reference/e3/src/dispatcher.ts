// Delivery: one queue per subscription, worked one delivery at a time in the order the events
// were accepted. A delivery is finished when the subscriber answered 2xx (recorded as delivered)
// or after the last allowed attempt failed (recorded as dead); only then does the next one start.

import { request } from "node:http";
import { request as requestTls } from "node:https";
import type { RelayEvent, Store } from "./store.ts";

/** A subscriber that does not answer within this many milliseconds has failed the attempt. */
export const ATTEMPT_TIMEOUT_MS = 10_000;

export interface RetryPolicy {
  /** Wait after the first failed attempt, doubled after each further one (milliseconds). */
  baseMs: number;
  /** Attempts before a delivery is dead. */
  maxAttempts: number;
}

interface Job {
  event: RelayEvent;
  replay: boolean;
}

/** The body a subscriber receives for an event: the same bytes on every attempt and replay. */
export function deliveryBody(event: RelayEvent): string {
  const body: Record<string, unknown> = { id: event.id, topic: event.topic };
  if (event.key !== undefined) {
    body.key = event.key;
    body.version = event.version;
  }
  body.accepted_at = event.acceptedAt;
  body.payload = event.payload;
  return JSON.stringify(body);
}

/** POST one attempt; resolves true on a 2xx answer, false on anything else. */
function post(url: string, body: string, headers: Record<string, string>): Promise<boolean> {
  return new Promise((resolve) => {
    let target: URL;
    try {
      target = new URL(url);
    } catch {
      resolve(false);
      return;
    }
    const send = target.protocol === "https:" ? requestTls : request;
    const req = send(
      target,
      {
        method: "POST",
        agent: false,
        timeout: ATTEMPT_TIMEOUT_MS,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body), ...headers },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode !== undefined && res.statusCode >= 200 && res.statusCode < 300));
        res.on("error", () => resolve(false));
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", () => resolve(false));
    req.end(body);
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export class Dispatcher {
  private readonly queues = new Map<string, Job[]>();
  private readonly running = new Set<string>();
  private stopped = false;
  private readonly store: Store;
  private readonly policy: RetryPolicy;

  constructor(store: Store, policy: RetryPolicy) {
    this.store = store;
    this.policy = policy;
  }

  /** Queue every delivery the journal still owes (after a restart), in acceptance order. */
  resume(): void {
    for (const sub of this.store.subscriptions.keys()) {
      for (const event of this.store.pendingFor(sub)) this.enqueue(sub, { event, replay: false });
    }
  }

  /** Queue the deliveries of a newly accepted event. */
  dispatch(event: RelayEvent): void {
    for (const sub of event.deliveries.keys()) this.enqueue(sub, { event, replay: false });
  }

  /** Queue re-deliveries of the events already delivered to a subscription, from `from` on. */
  replay(subscription: string, events: RelayEvent[]): void {
    for (const event of events) this.enqueue(subscription, { event, replay: true });
  }

  stop(): void {
    this.stopped = true;
  }

  private enqueue(subscription: string, job: Job): void {
    const queue = this.queues.get(subscription) ?? [];
    queue.push(job);
    this.queues.set(subscription, queue);
    if (!this.running.has(subscription)) void this.work(subscription);
  }

  private async work(subscription: string): Promise<void> {
    this.running.add(subscription);
    const queue = this.queues.get(subscription)!;
    while (queue.length > 0 && !this.stopped) {
      await this.deliver(subscription, queue[0]);
      queue.shift();
    }
    this.running.delete(subscription);
  }

  private async deliver(subscription: string, job: Job): Promise<void> {
    const sub = this.store.subscriptions.get(subscription)!;
    const body = deliveryBody(job.event);
    for (let attempt = 1; attempt <= this.policy.maxAttempts; attempt += 1) {
      if (this.stopped) return;
      const headers: Record<string, string> = {
        "x-relay-event": job.event.id,
        "x-relay-delivery": `${job.event.id}.${subscription}`,
        "x-relay-attempt": String(attempt),
      };
      if (job.replay) headers["x-relay-replay"] = "1";
      if (await post(sub.url, body, headers)) {
        if (!job.replay) this.store.markDelivered(job.event.id, subscription);
        return;
      }
      if (attempt < this.policy.maxAttempts) await sleep(this.policy.baseMs * 2 ** (attempt - 1));
    }
    if (!job.replay) this.store.markDead(job.event.id, subscription, this.policy.maxAttempts);
  }
}
