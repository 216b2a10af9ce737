// Public smoke tests; run them from the workspace root with `node --test`.
// "the relay starts and listens" passes on the starter; "a subscription can be created" fails
// until POST /subscriptions is implemented.

import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, test } from "node:test";

const MAIN = new URL("../src/main.ts", import.meta.url).pathname;
const running: ChildProcess[] = [];
after(() => {
  for (const child of running) child.kill("SIGKILL");
});

/** Start the relay on a fresh state directory; resolves with its base URL. */
function startRelay(): Promise<string> {
  const state = mkdtempSync(join(tmpdir(), "relay-"));
  const child = spawn(process.execPath, [MAIN, "--state", state, "--port", "0"], { stdio: ["ignore", "pipe", "inherit"] });
  running.push(child);
  return new Promise((resolve, reject) => {
    child.stdout!.on("data", (chunk: Buffer) => {
      const match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(chunk.toString());
      if (match) resolve(match[1]);
    });
    child.on("exit", (code) => reject(new Error(`the relay exited with status ${code}`)));
  });
}

test("the relay starts and listens", async () => {
  const base = await startRelay();
  assert.match(base, /^http:\/\/127\.0\.0\.1:\d+$/);
});

test("a subscription can be created", async () => {
  const base = await startRelay();
  const response = await fetch(`${base}/subscriptions`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ url: "http://127.0.0.1:9/hook", topics: ["order.created"] }),
  });
  assert.equal(response.status, 201);
  const body = await response.json();
  assert.equal(typeof body.id, "string");
});
