/** The key retirement rule, pure (agent/key-retirement.ts); the transport's use of it is in transport.test.ts. */
import { randomBytes } from "node:crypto";
import { describe, expect, it } from "vitest";
import { KeyRetirement } from "../agent/key-retirement.js";

const key = () => {
  const b = randomBytes(32);
  return { id: b.subarray(0, 4).toString("hex"), key: b };
};

describe("KeyRetirement", () => {
  it("retires once, at the clock's time, when the last member signs with its current identity; previous-identity packets do not undo a confirmation", () => {
    const [k1, k2] = [key(), key()];
    let now = Date.parse("2026-12-03T08:00:00Z");
    const r = new KeyRetirement({ current: k2, previous: k1 }, ["w", "b", "a"], () => now);
    expect(r.signed("a", false)).toBeNull();
    expect(r.signed("a", true)).toBeNull();
    // Signed as a with the old key (a leaked key's holder can): a stays confirmed, or the thief could hold the key accepted.
    expect(r.signed("a", false)).toBeNull();
    expect(r.signed("b", true)).toBeNull();
    expect(r.waitingFor()).toEqual(["w"]);
    expect(r.signed("stranger", true)).toBeNull();
    expect(r.signed("w", false)).toBeNull();
    now += 1500;
    expect(r.signed("w", true)).toEqual({ keyId: k1.id, current: k2.id, atMs: now });
    expect(r.signed("w", true)).toBeNull(); // once
    expect(r.accepted()).toEqual({ current: k2, previous: null });
    expect(r.status()).toEqual({ current: k2.id, previous: null, waitingFor: [], retired: { keyId: k1.id, at: "2026-12-03T08:00:01.500Z" } });
  });

  it("an empty member list retires nothing (a transport not yet told its peers)", () => {
    const [k1, k2] = [key(), key()];
    const r = new KeyRetirement({ current: k2, previous: k1 }, [], () => 0);
    expect(r.setMembers([])).toBeNull();
    expect(r.accepted().previous).toBe(k1);
  });

  it("the same keys on reload keep the retirement; a new roll waits for every member again", () => {
    const [k1, k2, k3] = [key(), key(), key()];
    const r = new KeyRetirement({ current: k2, previous: k1 }, ["a"], () => 0);
    expect(r.signed("a", true)).not.toBeNull();
    r.setKeys({ current: k2, previous: k1 });
    expect(r.accepted().previous).toBeNull();
    expect(r.retiredKeyId()).toBe(k1.id);
    r.setKeys({ current: k3, previous: k2 });
    expect(r.accepted().previous).toBe(k2);
    expect(r.retiredKeyId()).toBeNull();
    expect(r.status()).toMatchObject({ current: k3.id, previous: k2.id, waitingFor: ["a"], retired: null });
    expect(r.signed("a", true)).toEqual({ keyId: k2.id, current: k3.id, atMs: 0 });
    // Another pair is another roll, even one whose previous key was retired before.
    r.setKeys({ current: key(), previous: k2 });
    expect(r.accepted().previous).toBe(k2);
  });

  it("nothing to retire without a previous key", () => {
    const r = new KeyRetirement({ current: key(), previous: null }, ["a"], () => 0);
    const k = r.accepted().current;
    expect(r.signed("a", true)).toBeNull();
    expect(r.status()).toEqual({ current: k.id, previous: null, waitingFor: [], retired: null });
  });
});
