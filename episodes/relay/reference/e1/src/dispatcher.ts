// Delivery: one queue per subscription, worked one delivery at a time in the order the events
// were accepted. A delivery is finished when the subscriber answered 2xx (recorded as
// delivered); until then it is tried again, waiting longer after each failure (1 s, doubling,
// at most a minute). Only then does the subscription's next delivery start.

import { request } from "node:http";
import { request as requestTls } from "node:https";
import type { RelayEvent, Store } from "./store.ts";

/** A subscriber that does not answer within this many milliseconds has failed the attempt. */
export const ATTEMPT_TIMEOUT_MS = 10_000;
const FIRST_WAIT_MS = 1_000;
const LONGEST_WAIT_MS = 60_000;

/** The body a subscriber receives for an event: the same bytes on every attempt. */
export function deliveryBody(event: RelayEvent): string {
  return JSON.stringify({ id: event.id, topic: event.topic, payload: event.payload });
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
  private readonly queues = new Map<string, RelayEvent[]>();
  private readonly running = new Set<string>();
  private stopped = false;
  private readonly store: Store;

  constructor(store: Store) {
    this.store = store;
  }

  /** Queue every delivery the journal still owes (after a restart), in acceptance order. */
  resume(): void {
    for (const sub of this.store.subscriptions.keys()) {
      for (const event of this.store.pendingFor(sub)) this.enqueue(sub, event);
    }
  }

  /** Queue the deliveries of a newly accepted event. */
  dispatch(event: RelayEvent): void {
    for (const sub of event.deliveries.keys()) this.enqueue(sub, event);
  }

  stop(): void {
    this.stopped = true;
  }

  private enqueue(subscription: string, event: RelayEvent): void {
    const queue = this.queues.get(subscription) ?? [];
    queue.push(event);
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

  private async deliver(subscription: string, event: RelayEvent): Promise<void> {
    const sub = this.store.subscriptions.get(subscription)!;
    const body = deliveryBody(event);
    const headers = { "x-relay-event": event.id, "x-relay-delivery": `${event.id}.${subscription}` };
    for (let wait = FIRST_WAIT_MS; !this.stopped; wait = Math.min(wait * 2, LONGEST_WAIT_MS)) {
      if (await post(sub.url, body, headers)) {
        this.store.markDelivered(event.id, subscription);
        return;
      }
      await sleep(wait);
    }
  }
}
