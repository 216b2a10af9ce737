import assert from "node:assert/strict";
import { test } from "node:test";
import { maskCard, maskEmail, redact, redactText } from "../src/redact.ts";

test("emails keep their first character and domain", () => {
  assert.equal(maskEmail("jane.doe@example.org"), "j***@example.org");
  assert.equal(redactText("write to OMAR.K@mail.example.co.uk today"), "write to O***@mail.example.co.uk today");
});

test("card numbers keep their last four digits, with or without separators", () => {
  assert.equal(maskCard("4111 1111 1111 1234"), "****1234");
  assert.equal(redactText("cards 4111111111111234, 5500-0000-0000-0004"), "cards ****1234, ****0004");
  assert.equal(redactText("not a card: 12345678901234567"), "not a card: 12345678901234567");
  assert.equal(redactText("mixed separators 4111 1111-1111 1234"), "mixed separators 4111 1111-1111 1234");
});

test("redaction reaches every string at any depth but not object keys", () => {
  const payload = {
    "jane@example.org": "key stays",
    list: ["a@b.example", { deep: "4111111111111111" }],
    n: 4111111111111111,
  };
  assert.deepEqual(redact(payload), {
    "jane@example.org": "key stays",
    list: ["a***@b.example", { deep: "****1111" }],
    n: 4111111111111111,
  });
});
