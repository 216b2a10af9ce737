// The HTTP interface. Every response is JSON; errors are `{"error": "<code>"}` and never quote
// the request.

import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Dispatcher } from "./dispatcher.ts";
import { redact } from "./redact.ts";
import type { RelayEvent, Store } from "./store.ts";
import { eventRequest, parseObject, Rejection, subscriptionRequest } from "./validate.ts";

/** Largest accepted request body, in bytes. */
export const MAX_BODY_BYTES = 1024 * 1024;

interface Reply {
  status: number;
  body: unknown;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on("data", (chunk: Buffer) => {
      size += chunk.length;
      if (size <= MAX_BODY_BYTES) chunks.push(chunk);
    });
    req.on("end", () => {
      if (size > MAX_BODY_BYTES) reject(new Rejection(413, "payload_too_large"));
      else resolve(Buffer.concat(chunks).toString("utf8"));
    });
    req.on("error", reject);
  });
}

function eventView(event: RelayEvent): Record<string, unknown> {
  return {
    id: event.id,
    topic: event.topic,
    payload: event.payload,
    status: "accepted",
    deliveries: Object.fromEntries(event.deliveries),
  };
}

export class Relay {
  private readonly store: Store;
  private readonly dispatcher: Dispatcher;

  constructor(store: Store, dispatcher: Dispatcher) {
    this.store = store;
    this.dispatcher = dispatcher;
  }

  /** Route one request (its body already read) to its handler. */
  handle(method: string, path: string, headers: IncomingMessage["headers"], raw: string): Reply {
    const parts = path.split("/").filter(Boolean);
    const allow = (...methods: string[]) => {
      if (!methods.includes(method)) throw new Rejection(405, "method_not_allowed");
    };
    if (parts.length === 1 && parts[0] === "events") {
      allow("POST");
      return this.postEvent(headers, raw);
    }
    if (parts.length === 2 && parts[0] === "events") {
      allow("GET");
      const event = this.store.events.get(parts[1]);
      if (!event) throw new Rejection(404, "not_found");
      return { status: 200, body: eventView(event) };
    }
    if (parts.length === 1 && parts[0] === "subscriptions") {
      allow("POST");
      const request = subscriptionRequest(parseObject(raw));
      const sub = this.store.addSubscription(request.url, request.topics);
      return { status: 201, body: sub };
    }
    if (parts.length === 2 && parts[0] === "subscriptions") {
      allow("GET");
      const sub = this.store.subscriptions.get(parts[1]);
      if (!sub) throw new Rejection(404, "not_found");
      return { status: 200, body: { ...sub, ...this.store.countsFor(sub.id) } };
    }
    throw new Rejection(404, "not_found");
  }

  private postEvent(headers: IncomingMessage["headers"], raw: string): Reply {
    const idempotencyKey = headers["idempotency-key"];
    if (typeof idempotencyKey !== "string" || idempotencyKey.length === 0) {
      throw new Rejection(400, "missing_idempotency_key");
    }
    const request = eventRequest(parseObject(raw));
    const earlier = this.store.byIdempotencyKey.get(idempotencyKey);
    if (earlier) return { status: 200, body: { id: earlier.id, status: "duplicate" } };
    const event = this.store.addEvent({
      idempotencyKey,
      topic: request.topic,
      payload: redact(request.payload),
    });
    this.dispatcher.dispatch(event);
    return { status: 202, body: { id: event.id, status: "accepted" } };
  }

  /** An HTTP server answering with this relay. */
  server(): Server {
    return createServer((req: IncomingMessage, res: ServerResponse) => {
      const send = (reply: Reply) => {
        const text = JSON.stringify(reply.body);
        res.writeHead(reply.status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
        res.end(text);
      };
      const fail = (error: unknown) => {
        if (error instanceof Rejection) send({ status: error.status, body: { error: error.code } });
        else {
          process.stderr.write(`relay: internal error: ${error instanceof Error ? error.name : "unknown"}\n`);
          send({ status: 500, body: { error: "internal" } });
        }
      };
      readBody(req)
        .then((raw) => send(this.handle(req.method ?? "GET", new URL(req.url ?? "/", "http://relay").pathname, req.headers, raw)))
        .catch(fail);
    });
  }
}
