/** The agent's config file on disk: what it refuses (in one printable line) and that it reads what apply-config writes. */
import { publicKeysFor } from "../testbed/identity.js";
import { execFileSync, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, symlinkSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gzipSync } from "node:zlib";
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildAgentBundle } from "../agent/build.js";
import { ConfigError, parseAgentConfig, type AgentConfigInput } from "../agent/config.js";
import { MAX_CONFIG_BYTES, loadAgentConfigFile, parseConfigText, renderAgentConfig } from "../agent/config-file.js";

let dir = "";
let bundle = "";
beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "halb-config-file-"));
  bundle = (await buildAgentBundle(join(dir, "fipd.cjs"))).path;
}, 60_000);
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const file = (name: string, content: string | Uint8Array): string => {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
};
const problems = (path: string): string[] => {
  try {
    loadAgentConfigFile(path);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return (e as ConfigError).problems;
  }
  throw new Error(`expected ${path} to be refused`);
};

/** Deterministic noise (a linear congruential generator), so a failure replays. */
const noise = (n: number, seed: number): Buffer => {
  const b = Buffer.alloc(n);
  for (let i = 0, x = seed; i < n; i++) b[i] = (x = (x * 1103515245 + 12345) >>> 0) >>> 24;
  return b;
};

const valid = `nodeId: lb-1
reservedIp: 198.51.100.7
members:
  - { id: lb-1, address: 10.10.0.2, color: blue }
  - { id: lb-2, address: 10.10.0.3, color: blue }
  - { id: w, address: 203.0.113.9, role: witness }
peerAuth:
  publicKeys:
${publicKeysFor(["lb-1", "lb-2", "w"])
  .map((k) => `    - { id: ${k.id}, publicKey: "${k.publicKey}" }`)
  .join("\n")}
`;

const BINARY: [string, Uint8Array][] = [
  ["random bytes", noise(4096, 7)],
  ["an executable", Buffer.concat([Buffer.from("\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0", "latin1"), noise(2048, 3)])],
  ["a gzip archive", gzipSync(valid)],
  // The input that made the previous parser (yaml) print a warning with the raw bytes to stderr.
  ["a YAML directive line of binary", Buffer.from("%\x01\x02\xff\xfe binary\0\0\nfoo: 1\n", "latin1")],
  ["a NUL inside valid YAML", Buffer.from(valid.replace("lb-2", "lb-2\0"))],
  ["Latin-1 text", Buffer.from(valid + "# café\n", "latin1")],
];

describe("reading the config file", () => {
  it("reads a valid file, YAML or JSON, with or without a byte order mark", () => {
    expect(loadAgentConfigFile(file("ok.yaml", valid)).members).toHaveLength(3);
    const json = JSON.stringify(parseConfigText(Buffer.from(valid), "x"));
    expect(loadAgentConfigFile(file("ok.json", "\ufeff" + json)).nodeId).toBe("lb-1");
  });

  it.each(BINARY)("refuses %s in one line that says what it is and where, echoing nothing", (_, bytes) => {
    const p = problems(file("bin", bytes));
    expect(p).toHaveLength(1);
    expect(p[0]).toMatch(
      /^(is not UTF-8 text \(line \d+\)|contains the control character U\+[0-9a-f]{4} \(line \d+, column \d+\)).*; expected a YAML or JSON config file$/,
    );
  });

  it("names the line of a stray control character or a non-UTF-8 byte", () => {
    expect(problems(file("nul", Buffer.from(valid.replace("lb-2", "lb-2\0"))))).toEqual([
      "contains the control character U+0000 (line 5, column 15), a binary file?; expected a YAML or JSON config file",
    ]);
    expect(problems(file("latin1", Buffer.from(valid + "# café\n", "latin1")))[0]).toMatch(/^is not UTF-8 text \(line 12\)/);
  });

  it("refuses an empty, oversized, duplicated or broken file, and a document that is not a mapping, with the place", () => {
    expect(problems(file("empty", " \n\n"))).toEqual(["is empty; expected a mapping of settings such as nodeId and members"]);
    expect(problems(file("big", "#".repeat(MAX_CONFIG_BYTES + 1)))).toEqual([
      `is ${MAX_CONFIG_BYTES + 1} bytes; a config file is at most ${MAX_CONFIG_BYTES} bytes`,
    ]);
    expect(problems(file("dup", valid + "nodeId: lb-2\n"))).toEqual(["not valid YAML or JSON (line 12, column 1): duplicated mapping key"]);
    expect(problems(file("broken", "members: [1\n"))[0]).toMatch(/^not valid YAML or JSON \(line 2, column 1\): /);
    expect(problems(file("list", "[1, 2]"))).toEqual(["(root): must be a mapping of settings such as nodeId and members, got a list of 2"]);
    expect(problems(join(dir, "missing"))).toEqual(["cannot read the file: ENOENT"]);
    expect(problems(dir)).toEqual(["is a directory; expected a regular file (a YAML or JSON config file)"]);
  });

  it("keeps YAML 1.1 look-alikes as strings (the YAML 1.2 core schema): yes, on, dates", () => {
    const doc = parseConfigText(Buffer.from("a: yes\nb: on\nc: 2001-12-14\nd: 0x10\ne: ~\n"), "x");
    expect(doc).toEqual({ a: "yes", b: "on", c: "2001-12-14", d: 16, e: null });
  });

  it("fipd check-config on a binary file: exit 2, two lines on stderr (the file, the problem), nothing else, nothing unprintable", () => {
    for (const [what, bytes] of BINARY) {
      const p = file("bin", bytes);
      const r = spawnSync(process.execPath, [bundle, "check-config", p, "--schema-only"], { encoding: "buffer", timeout: 30_000 });
      const stderr = new TextDecoder("utf-8", { fatal: true }).decode(r.stderr);
      expect(r.status, what).toBe(2);
      expect(r.stdout.length, what).toBe(0);
      expect(stderr, what).toMatch(new RegExp(`^invalid configuration in ${p}:\\n  [^\\n]+\\n$`));
      expect(stderr, what).not.toMatch(/[\p{C}\p{Zl}\p{Zp}](?<!\n)/u);
    }
  }, 60_000);
});

describe("what is not a config file", () => {
  const checkConfig = (path: string) => spawnSync(process.execPath, [bundle, "check-config", path, "--schema-only"], { encoding: "utf8", timeout: 20_000 });

  it("refuses a device such as /dev/zero by its type, before reading a byte", () => {
    expect(problems("/dev/zero")).toEqual(["is a character device; expected a regular file (a YAML or JSON config file)"]);
  });

  it("refuses a FIFO at once, with no writer (it would block the reader), in check-config too", () => {
    const fifo = join(dir, "fifo.yaml");
    execFileSync("mkfifo", [fifo]);
    // In a child process: a reader that opens the FIFO blocking would hang this test's worker for good.
    const r = checkConfig(fifo);
    expect(r.error, "check-config did not finish in 20 s").toBeUndefined();
    expect(r.status).toBe(2);
    expect(r.stderr).toBe(`invalid configuration in ${fifo}:\n  is a FIFO (named pipe); expected a regular file (a YAML or JSON config file)\n`);
  });

  it("refuses a 45 MB file by its size, without reading it", () => {
    const big = join(dir, "big.yaml");
    writeFileSync(big, valid);
    truncateSync(big, 45 * 1024 * 1024);
    const before = process.memoryUsage().rss;
    expect(problems(big)).toEqual([`is ${45 * 1024 * 1024} bytes; a config file is at most ${MAX_CONFIG_BYTES} bytes`]);
    expect(process.memoryUsage().rss - before).toBeLessThan(20 * 1024 * 1024);
  });

  it("refuses a config whose control socket path holds a file that is not a socket (check-config and run)", () => {
    const shadow = file("shadow", "root:*:19000:0:99999:7:::\n");
    const link = join(dir, "link.sock");
    symlinkSync(shadow, link);
    const withSocket = (socket: string) => file("socket.yaml", `${valid}controlSocket: ${JSON.stringify(socket)}\n`);
    expect(problems(withSocket("/etc/shadow"))).toEqual([
      "controlSocket: /etc/shadow exists and is a regular file, not a socket; fipd never replaces it: remove it or choose another path",
    ]);
    expect(problems(withSocket(dir))[0]).toMatch(/^controlSocket: .* exists and is a directory, not a socket/);
    expect(problems(withSocket(link))[0]).toMatch(/^controlSocket: .* exists and is a symbolic link, not a socket/);
    expect(problems(withSocket(`${shadow}/fipd.sock`))[0]).toMatch(/^controlSocket: a parent of .* is not a directory/);
    expect(loadAgentConfigFile(withSocket(join(dir, "free.sock"))).controlSocket).toBe(join(dir, "free.sock"));

    const cfg = withSocket(shadow);
    const check = checkConfig(cfg);
    expect(check.status).toBe(2);
    expect(check.stderr).toContain(`controlSocket: ${shadow} exists and is a regular file, not a socket`);
    const run = spawnSync(process.execPath, [bundle, "run", "--config", cfg], { encoding: "utf8", timeout: 20_000 });
    expect(run.status).toBe(2);
    expect(run.stderr).toContain(`fipd: refusing to start: invalid configuration in ${cfg}:\n  controlSocket: ${shadow} exists and is a regular file`);
    expect(readFileSync(shadow, "utf8")).toBe("root:*:19000:0:99999:7:::\n");
  });
});

/** Strings a YAML writer must quote, and a reader must not take for another type or for syntax. */
const tricky = fc.oneof(
  fc.constantFrom(
    "yes",
    "no",
    "on",
    "off",
    "null",
    "~",
    "true",
    "0x10",
    "0o7",
    "1e3",
    ".inf",
    "-.nan",
    "2001-12-14",
    "12:30",
    "-",
    "? x",
    "#x",
    " a",
    "a ",
    "a #b",
  ),
  fc.constantFrom("'", '"', "\\", ":", "[", "{", "!x", "&a", "*a", "|", ">", "%x", "@", "`", "a: b", "- a", "\u0085", "\u2028", "\ufeff", "é"),
  fc.string({ unit: "binary", minLength: 1, maxLength: 20 }),
);

/** Addresses and host names a YAML reader could take for another type (a number, a boolean, null, a time). */
const hostLike = fc.oneof(
  fc.constantFrom(
    "yes",
    "no",
    "on",
    "null",
    "true",
    "nan",
    "infinity",
    "1e3",
    "0x10",
    "0o17",
    "::1",
    "fe80::1",
    "::ffff:10.0.0.1",
    "10.10.0.2",
    "lb-1.example.",
  ),
  fc.stringMatching(/^[a-z]([a-z0-9-]{0,10}[a-z0-9])?(\.[a-z][a-z0-9-]{0,5}[a-z0-9])?$/),
);

const PUBLIC_KEYS = publicKeysFor(["a", "b"]).map((k) => k.publicKey);
const agentConfigInput: fc.Arbitrary<AgentConfigInput> = fc
  .uniqueArray(fc.stringMatching(/^[a-z0-9][a-z0-9-]{0,8}$/), { minLength: 1, maxLength: 5 })
  .chain((ids) =>
    fc.record({
      ids: fc.constant(ids),
      self: fc.constantFrom(...ids),
      members: fc.tuple(
        ...ids.map((id) =>
          fc.record({
            id: fc.constant(id),
            address: hostLike,
            port: fc.integer({ min: 1, max: 65535 }),
            witness: fc.boolean(),
            color: fc.constantFrom("blue" as const, "green" as const),
            priority: fc.integer({ min: 0, max: 255 }),
          }),
        ),
      ),
      stateFile: tricky,
      controlSocket: tricky.filter((t) => !t.includes("\0")).map((t) => `/${t}`),
      tokenFile: tricky,
      maxClockDrift: fc.double({ min: 0, max: 0.1, noNaN: true }),
      maintenance: fc.boolean(),
    }),
  )
  .map((g) => ({
    nodeId: g.self,
    reservedIp: "198.51.100.7",
    members: g.members.map((m) => ({
      id: m.id,
      address: m.address,
      port: m.port,
      priority: m.priority,
      ...(m.witness ? { role: "witness" as const } : { color: m.color }),
    })),
    peerAuth: { publicKeys: g.members.map((m, i) => ({ id: m.id, publicKey: PUBLIC_KEYS[i % PUBLIC_KEYS.length] })) },
    stateFile: g.stateFile,
    controlSocket: g.controlSocket,
    api: { tokenFile: g.tokenFile },
    failover: { maxClockDrift: g.maxClockDrift },
    maintenance: g.maintenance,
  }));

describe("what apply-config writes", () => {
  it("reads back as the same document and the same config, whatever the strings hold", () => {
    fc.assert(
      fc.property(agentConfigInput, (doc) => {
        const text = renderAgentConfig(doc);
        const back = parseConfigText(Buffer.from(text), "rendered");
        expect(back).toEqual(doc);
        expect(parseAgentConfig(back)).toEqual(parseAgentConfig(doc));
      }),
      { numRuns: 300 },
    );
  }, 60_000);
});
