/** The shared validation pieces (agent/schema.ts) that the agent's and the stack's schemas are built from. */
import * as v from "valibot";
import { describe, expect, it } from "vitest";
import {
  check,
  cidr4,
  crossCheck,
  durationMs,
  exactlyOneOf,
  formatIssues,
  ipv4,
  listOf,
  nodeId,
  port,
  printable,
  secret,
  problemsOf,
  show,
  strictObject,
} from "../agent/schema.js";

/** The lines a parse reports, or [] when the input is valid. */
const lines = (schema: v.GenericSchema, input: unknown): string[] => {
  const r = check(schema, input);
  return r.ok ? [] : formatIssues(r.issues);
};

describe("showing input", () => {
  it("escapes control and other unprintable characters and cuts long text, so a message is one printable line", () => {
    expect(printable("a\u0000b\nc\u001b[31m\u2028d")).toBe("a\\u{0}b\\u{a}c\\u{1b}[31m\\u{2028}d");
    expect(printable(printable("x\u0007"))).toBe("x\\u{7}");
    expect(printable("é ü 日本")).toBe("é ü 日本");
    expect(printable("x".repeat(500), 10)).toBe(`${"x".repeat(10)}… (500 characters)`);
    expect(show("\u0001".repeat(100))).toMatch(/^"(\\u\{1\}){60}… \(100 characters\)"$/);
    expect([show(undefined), show(null), show([1, 2]), show({ a: 1 }), show(3.5), show(false)]).toEqual([
      "nothing",
      "null",
      "a list of 2",
      "a mapping",
      "3.5",
      "false",
    ]);
  });

  it("never puts a raw input character outside the printable range into a line, even from a schema built without messages", () => {
    const bad = "\u0000\u0001\u007f\u0085\ufeff";
    for (const l of [...lines(v.number(), bad), ...lines(strictObject({ a: v.string() }), { [bad]: 1 }), ...lines(nodeId, bad)]) {
      expect(l).not.toMatch(/[\p{C}\p{Zl}\p{Zp}]/u);
    }
    expect(lines(v.number(), "x")).toEqual(['(root): must be number, got "x"']);
  });
});

describe("values", () => {
  it("say what was wrong and what is expected", () => {
    expect(lines(durationMs(10, 5_000), 3.5)).toEqual(["(root): must be a whole number of milliseconds from 10 to 5000, got 3.5"]);
    expect(lines(durationMs(10, 5_000), 5_001)).toEqual(["(root): must be a whole number of milliseconds from 10 to 5000, got 5001"]);
    expect(lines(port, "80")).toEqual(['(root): must be a port number from 1 to 65535, got "80"']);
    expect(lines(port, 1e300)).toHaveLength(1);
    expect(lines(ipv4, "10.0.0.256")).toEqual(['(root): must be an IPv4 address such as 198.51.100.7, got "10.0.0.256"']);
    expect(lines(listOf(port, { min: 1 }), [])).toEqual(["(root): must have at least 1 entry, got a list of 0"]);
    expect(lines(listOf(port, { min: 1, fewer: "needs a port" }), [])).toEqual(["(root): needs a port"]);
  });

  it("secrets: the message gives the length or the kind, never the value", () => {
    const key = secret("a key of at least 32 characters", 32);
    expect(lines(key, "SECRET-abc")).toEqual(["(root): must be a key of at least 32 characters, got 10 characters"]);
    expect(lines(key, 12345)).toEqual(['(root): must be a key of at least 32 characters, got "number"']);
    expect(lines(strictObject({ token: secret("a token") }), { token: "" })).toEqual(["token: must be a token, got 0 characters"]);
  });

  it("CIDRs: an IPv4 address and a prefix length of 0 to 32, nothing else", () => {
    for (const ok of ["0.0.0.0/0", "10.0.0.0/8", "198.51.100.0/24", "203.0.113.7/32"]) expect(lines(cidr4, ok), ok).toEqual([]);
    for (const bad of ["10.0.0.0/33", "10.0.0.0", "10.0.0/8", "10.0.0.0/8/8", "10.0.0.0/08", "256.0.0.0/8", "10.0.0.0/", " 10.0.0.0/8"]) {
      expect(lines(cidr4, bad), bad).toEqual([`(root): must be an IPv4 CIDR such as 198.51.100.0/24, got "${bad}"`]);
    }
  });
});

describe("strict objects", () => {
  const O = strictObject({ name: nodeId, port: v.optional(port, 80), inner: v.optional(strictObject({ a: v.optional(port) }), {}) });

  it("fill defaults, also inside a defaulted object", () => {
    const r = check(O, { name: "a" });
    expect(r.ok && r.value).toEqual({ name: "a", port: 80, inner: {} });
  });

  it("name every unknown key in one line with the known keys, require what has no default, and refuse a list", () => {
    expect(lines(O, { port: 0, bogus: 1, other: 2, inner: { b: 1 } })).toEqual([
      "name: is required (a node id: 1-63 characters of a-z, 0-9 and '-', starting with a letter or digit)",
      "port: must be a port number from 1 to 65535, got 0",
      'inner: has unknown key "b" (known keys: a)',
      '(root): has unknown keys "bogus", "other" (known keys: name, port, inner)',
    ]);
    expect(lines(O, ["name"])).toEqual(["(root): must be a mapping, got a list of 1"]);
    expect(lines(O, null)).toEqual(["(root): must be a mapping, got null"]);
  });

  it("mark a missing key as such, so the stack can print its own expected form", () => {
    const r = check(O, { inner: { bogus: 1 } });
    expect(!r.ok && problemsOf(r.issues)).toEqual([
      { path: ["name"], message: expect.stringMatching(/^is required/), missing: true },
      { path: ["inner"], message: 'has unknown key "bogus" (known keys: a)', missing: false },
    ]);
  });
});

describe("rules across fields", () => {
  const Pair = v.pipe(
    strictObject({ lowMs: durationMs(0, 100), highMs: durationMs(0, 100), label: v.optional(nodeId) }),
    crossCheck([["lowMs"], ["highMs"]], (p, report) => {
      if (p.lowMs > p.highMs) report(["highMs"], `must be at least lowMs (${p.lowMs})`);
    }),
  );
  const List = v.pipe(
    strictObject({ items: listOf(strictObject({ id: nodeId, n: port })) }),
    crossCheck([["items", "$", "id"]], (l, report) => {
      const seen = new Set<string>();
      l.items.forEach((x, i) => (seen.has(x.id) ? report(["items", i, "id"], `duplicate "${x.id}"`) : seen.add(x.id)));
    }),
  );

  it("run when the fields they read are valid, even if others are not, and report at their own path", () => {
    expect(lines(Pair, { lowMs: 50, highMs: 20, label: "BAD" })).toEqual([
      expect.stringMatching(/^label: must be a node id/),
      "highMs: must be at least lowMs (50)",
    ]);
    expect(
      lines(List, {
        items: [
          { id: "a", n: 0 },
          { id: "a", n: 1 },
        ],
      }),
    ).toEqual(["items[0].n: must be a port number from 1 to 65535, got 0", 'items[1].id: duplicate "a"']);
  });

  it("wait while a field they read is invalid (one problem, not a second one built on it)", () => {
    expect(lines(Pair, { lowMs: 500, highMs: 20 })).toEqual(["lowMs: must be a whole number of milliseconds from 0 to 100, got 500"]);
    expect(
      lines(List, {
        items: [
          { id: "a", n: 1 },
          { id: "A", n: 1 },
          { id: "a", n: 1 },
        ],
      }),
    ).toEqual([expect.stringMatching(/^items\[1\]\.id: must be a node id/)]);
  });

  it("exactly one of: how the stack's config says 'this or that' without a union", () => {
    const Cert = v.pipe(strictObject({ pemFile: v.optional(v.string()), acmeEmail: v.optional(v.string()) }), exactlyOneOf(["pemFile", "acmeEmail"]));
    expect(lines(Cert, { pemFile: "/x" })).toEqual([]);
    expect(lines(Cert, {})).toEqual(["(root): needs exactly one of pemFile, acmeEmail, got none"]);
    expect(lines(Cert, { pemFile: "/x", acmeEmail: "a@b" })).toEqual(["(root): needs exactly one of pemFile, acmeEmail, got pemFile, acmeEmail"]);
    expect(lines(v.object({ certs: listOf(Cert) }), { certs: [{ pemFile: "/x" }, {}] })).toEqual([
      "certs[1]: needs exactly one of pemFile, acmeEmail, got none",
    ]);
  });
});

describe("formatIssues", () => {
  it("one line per problem, without repeats, at most 50 lines", () => {
    // 0.5 breaks two rules of `port` (whole, at least 1) with one message; -1 one rule; "x" the type.
    expect(lines(listOf(port), [0.5, -1, "x"])).toEqual([
      "[0]: must be a port number from 1 to 65535, got 0.5",
      "[1]: must be a port number from 1 to 65535, got -1",
      '[2]: must be a port number from 1 to 65535, got "x"',
    ]);
    const many = lines(
      listOf(port),
      Array.from({ length: 120 }, () => 0),
    );
    expect(many).toHaveLength(50);
    expect(many[49]).toBe("… and 71 more problems");
  });
});
