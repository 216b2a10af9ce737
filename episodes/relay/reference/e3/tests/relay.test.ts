// End-to-end tests: a relay process on a temporary state directory, a subscriber server in
// this process, requests with fetch.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;

interface Received {
  body: Record<string, unknown>;
  headers: Record<string, string | string[] | undefined>;
}

class Subscriber {
  readonly received: Received[] = [];
  answer: (received: Received) => number = () => 200;
  private readonly server: Server;
  private waiters: Array<() => void> = [];

  constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on("data", (chunk: Buffer) => chunks.push(chunk));
      req.on("end", () => {
        const received = { body: JSON.parse(Buffer.concat(chunks).toString("utf8")), headers: req.headers };
        this.received.push(received);
        res.writeHead(this.answer(received)).end();
        for (const wake of this.waiters.splice(0)) wake();
      });
    });
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, "127.0.0.1", resolve));
    const address = this.server.address();
    return `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}/hook`;
  }

  async waitFor(count: number): Promise<void> {
    while (this.received.length < count) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  close(): void {
    this.server.close();
  }
}

const running: ChildProcess[] = [];
after(() => {
  for (const child of running) child.kill("SIGKILL");
});

async function startRelay(state: string, ...flags: string[]): Promise<{ base: string; child: ChildProcess }> {
  const child = spawn(process.execPath, [MAIN, "--state", state, "--port", "0", ...flags], { stdio: ["ignore", "pipe", "pipe"] });
  running.push(child);
  const base = await new Promise<string>((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(chunk.toString());
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`relay exited ${code}`)));
  });
  return { base, child };
}

async function call(base: string, method: string, path: string, body?: unknown, key?: string) {
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (key !== undefined) headers["idempotency-key"] = key;
  const response = await fetch(base + path, {
    method,
    headers,
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: response.status, body: await response.json() };
}

test("an event is delivered once, masked, and a retry is a duplicate", async () => {
  const subscriber = new Subscriber();
  const url = await subscriber.listen();
  const { base } = await startRelay(mkdtempSync(join(tmpdir(), "relay-")));
  const sub = await call(base, "POST", "/subscriptions", { url, topics: ["order.created"] });
  assert.equal(sub.status, 201);
  const event = { topic: "order.created", payload: { email: "jane@example.org", card: "4111 1111 1111 1234" } };
  const first = await call(base, "POST", "/events", event, "k-1");
  assert.deepEqual(first, { status: 202, body: { id: first.body.id, status: "accepted" } });
  const again = await call(base, "POST", "/events", JSON.stringify(event, null, 2), "k-1");
  assert.deepEqual(again, { status: 200, body: { id: first.body.id, status: "duplicate" } });
  await subscriber.waitFor(1);
  assert.deepEqual(subscriber.received[0].body.payload, { email: "j***@example.org", card: "****1234" });
  subscriber.close();
});

test("failed attempts are retried, then dead-lettered; the queue moves on", async () => {
  const subscriber = new Subscriber();
  subscriber.answer = (received) => ((received.body.payload as { fail?: boolean }).fail ? 503 : 200);
  const url = await subscriber.listen();
  const { base } = await startRelay(mkdtempSync(join(tmpdir(), "relay-")), "--retry-base-ms", "5", "--max-attempts", "3");
  await call(base, "POST", "/subscriptions", { url, topics: ["t"] });
  const dead = await call(base, "POST", "/events", { topic: "t", payload: { fail: true } }, "a");
  await call(base, "POST", "/events", { topic: "t", payload: { fail: false } }, "b");
  await subscriber.waitFor(4);
  assert.deepEqual(
    subscriber.received.map((r) => r.headers["x-relay-attempt"]),
    ["1", "2", "3", "1"],
  );
  const letters = await call(base, "GET", "/dead-letters");
  assert.deepEqual(letters.body, { dead_letters: [{ event: dead.body.id, subscription: "sub-1", attempts: 3 }] });
  subscriber.close();
});

test("state survives a kill: pending deliveries resume, newest versions are kept", async () => {
  const subscriber = new Subscriber();
  const url = await subscriber.listen();
  const state = mkdtempSync(join(tmpdir(), "relay-"));
  const first = await startRelay(state);
  await call(first.base, "POST", "/subscriptions", { url, topics: ["t"] });
  await call(first.base, "POST", "/events", { topic: "t", key: "o-1", version: 2, payload: {} }, "a");
  await subscriber.waitFor(1);
  while ((await call(first.base, "GET", "/subscriptions/sub-1")).body.delivered !== 1) {
    await new Promise((resolve) => setTimeout(resolve, 5)); // until the delivery is recorded
  }
  first.child.kill("SIGKILL");
  const second = await startRelay(state);
  const stale = await call(second.base, "POST", "/events", { topic: "t", key: "o-1", version: 1, payload: {} }, "b");
  assert.equal(stale.body.status, "stale");
  const retry = await call(second.base, "POST", "/events", { topic: "t", key: "o-1", version: 2, payload: {} }, "a");
  assert.equal(retry.body.status, "duplicate");
  const replay = await call(second.base, "POST", "/subscriptions/sub-1/replay", {});
  assert.deepEqual(replay.body, { replayed: 1 });
  await subscriber.waitFor(2);
  assert.deepEqual(subscriber.received[1].body, subscriber.received[0].body);
  assert.equal(subscriber.received[1].headers["x-relay-replay"], "1");
  subscriber.close();
});

test("bad requests are refused with their code", async () => {
  const { base } = await startRelay(mkdtempSync(join(tmpdir(), "relay-")));
  assert.deepEqual(await call(base, "POST", "/events", { topic: "t", payload: {} }), {
    status: 400,
    body: { error: "missing_idempotency_key" },
  });
  assert.deepEqual(await call(base, "POST", "/events", "{", "k"), { status: 400, body: { error: "malformed_json" } });
  assert.deepEqual(await call(base, "POST", "/events", { topic: "t" }, "k"), { status: 400, body: { error: "missing_field" } });
  assert.deepEqual(await call(base, "POST", "/events", { topic: "t", payload: [] }, "k"), {
    status: 400,
    body: { error: "wrong_type" },
  });
  assert.equal((await call(base, "POST", "/events", { topic: "t", payload: {} }, "k")).status, 202);
  assert.deepEqual(await call(base, "GET", "/events/nope"), { status: 404, body: { error: "not_found" } });
});
