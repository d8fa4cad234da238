/**
 * The ACME chain exchange between LBs (issue 15), on loopback with real stores in temp dirs and a
 * test CA made here: a chain spreads to every peer; a node that was down catches up at boot; the
 * newest wins both ways; a forged chain, a stranger's key and garbage are refused; a silent peer
 * costs one bounded exchange at a time.
 */
import { execFileSync } from "node:child_process";
import { createPublicKey } from "node:crypto";
import { parsePrivateKey, type OwnIdentity } from "../../agent/identity.js";
import { newIdentity } from "../../testbed/identity.js";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { identityExchangeAuth, startChainExchange, type ChainExchange, type ExchangePeer } from "../../agent/acme/exchange.js";
import { AcmeStore, type IssuedChain } from "../../agent/acme/store.js";
import { silentLogger, type Logger } from "../../agent/log.js";

const DOMAIN = "www.example.com";
let ca: string;
let keyPem: string;
const chains: Record<"old" | "new" | "forged", string> = { old: "", new: "", forged: "" };

beforeAll(() => {
  ca = mkdtempSync(join(tmpdir(), "halb-exchange-ca-"));
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: ca, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });
  run([
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "90",
    "-subj",
    "/CN=halb test CA",
  ]);
  writeFileSync(join(ca, "ext"), `subjectAltName=DNS:${DOMAIN}\nbasicConstraints=CA:FALSE\n`);
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "mine.key"]);
  run(["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "other.key"]);
  keyPem = readFileSync(join(ca, "mine.key"), "utf8");
  const issue = (k: string, days: number, out: string) => {
    run(["req", "-new", "-key", k, "-out", `${out}.csr`, "-subj", `/CN=${DOMAIN}`]);
    run([
      "x509",
      "-req",
      "-in",
      `${out}.csr`,
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca.key",
      "-CAcreateserial",
      "-out",
      `${out}.crt`,
      "-days",
      String(days),
      "-extfile",
      "ext",
    ]);
    return readFileSync(join(ca, `${out}.crt`), "utf8") + readFileSync(join(ca, "ca.pem"), "utf8");
  };
  chains.old = issue("mine.key", 30, "old");
  chains.new = issue("mine.key", 60, "new");
  chains.forged = issue("other.key", 80, "forged");
});
afterAll(() => rmSync(ca, { recursive: true, force: true }));

const dirs: string[] = [];
const running: ChainExchange[] = [];
afterEach(async () => {
  for (const x of running.splice(0)) await x.close();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function newStore(): AcmeStore {
  const stateDir = mkdtempSync(join(tmpdir(), "halb-exchange-state-"));
  dirs.push(stateDir);
  const s = new AcmeStore({
    stateDir,
    publicKeyFor: (n) => (n === "www" ? createPublicKey(keyPem) : undefined),
    domainsFor: (n) => (n === "www" ? [DOMAIN] : undefined),
    nowMs: () => Date.now(),
  });
  s.load();
  return s;
}
/** Each member's own Ed25519 identity, as the stack makes them (agent/identity.ts). */
const IDS: Record<string, OwnIdentity> = Object.fromEntries(["lb-1", "lb-2", "lb-3"].map((id) => [id, parsePrivateKey(newIdentity().privateKeyPem, "test")]));
const authOf = (key: OwnIdentity) =>
  identityExchangeAuth(
    () => ({ current: key, previous: null }),
    (id) => (IDS[id] ? [IDS[id]] : []),
  );

interface Node {
  id: string;
  store: Pick<AcmeStore, "chains" | "chain" | "offer" | "onChange">;
  x?: ChainExchange;
  port: number;
  logs: string[];
}
/** A logger that keeps warn and info lines (message and a few fields). */
function keeping(lines: string[]): Logger {
  const keep = (m: string, f?: Record<string, unknown>) => void lines.push(`${m} ${JSON.stringify(f ?? {})}`);
  return { ...silentLogger, info: keep, warn: keep, child: () => keeping(lines) };
}
/** Nodes on loopback: ports fixed up front, so a node not started yet is simply unreachable. */
async function freePorts(n: number): Promise<number[]> {
  const servers: Server[] = [];
  for (let i = 0; i < n; i++)
    servers.push(
      await new Promise<Server>((r) => {
        const s = createServer().listen(0, "127.0.0.1", () => r(s));
      }),
    );
  const ports = servers.map((s) => (s.address() as { port: number }).port);
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.close(() => r()))));
  return ports;
}
function cluster(ids: string[], ports: number[]) {
  const nodes = ids.map((id, i): Node => ({ id, store: newStore(), port: ports[i], logs: [] }));
  const peersOf = (self: string): ExchangePeer[] => nodes.filter((n) => n.id !== self).map((n) => ({ id: n.id, address: "127.0.0.1", port: n.port }));
  const start = async (n: Node, key = IDS[n.id]) => {
    n.x = await startChainExchange({
      selfId: n.id,
      listenAddress: "127.0.0.1",
      listenPort: n.port,
      peers: () => peersOf(n.id),
      store: n.store,
      auth: authOf(key),
      log: keeping(n.logs),
      timeoutMs: 1000,
      fatal: (m) => {
        throw new Error(m);
      },
    });
    running.push(n.x);
  };
  const idle = async () => {
    for (let i = 0; i < 3; i++) for (const n of nodes) await n.x?.idle();
  };
  return { nodes, start, idle };
}
const held = (n: Node) => n.store.chain("www")?.pem;
const normalized = (pem: string) =>
  pem
    .match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)!
    .map((b) => `${b}\n`)
    .join("");

describe("ACME chain exchange", () => {
  it("a chain the leader's store takes reaches every peer; a node down meanwhile gets it at its boot", async () => {
    const { nodes, start, idle } = cluster(["lb-1", "lb-2", "lb-3"], await freePorts(3));
    const [a, b, c] = nodes;
    await start(a);
    await start(b);
    expect(a.store.offer("www", chains.new, "acme")).toEqual({ accepted: true });
    await idle();
    expect(held(b)).toBe(normalized(chains.new));
    expect(held(c)).toBeUndefined(); // down: its exchange never ran
    expect(b.logs.some((l) => l.startsWith("took a newer ACME certificate chain from a peer") && l.includes('"peer":"lb-1"'))).toBe(true);
    await start(c); // back: its boot advert's answer names the newer chain
    await idle();
    expect(held(c)).toBe(normalized(chains.new));
  });

  it("the newest wins both ways: an older advert takes nothing, and its sender gets the newer chain in the answer", async () => {
    const { nodes, start, idle } = cluster(["lb-1", "lb-2"], await freePorts(2));
    const [a, b] = nodes;
    expect(a.store.offer("www", chains.old, "acme").accepted).toBe(true);
    expect(b.store.offer("www", chains.new, "acme").accepted).toBe(true);
    await start(b);
    await start(a);
    await idle();
    expect(held(b)).toBe(normalized(chains.new));
    expect(held(a)).toBe(normalized(chains.new));
  });

  it("a forged chain (another key) is refused by the store, logged, and not fetched again", async () => {
    const { nodes, start, idle } = cluster(["lb-1", "lb-2"], await freePorts(2));
    const [a, b] = nodes;
    // lb-1 serves a forged chain (a store that holds anything), as a compromised peer would.
    const forged: IssuedChain = { name: "www", pem: chains.forged, notBeforeMs: 0, notAfterMs: Date.now() + 80 * 86_400_000, sha256: "f".repeat(64) };
    let gets = 0;
    a.store = { chains: () => [forged], chain: () => (gets++, forged), offer: () => ({ accepted: false, reason: "x" }), onChange: () => undefined };
    await start(a);
    await start(b);
    await idle();
    expect(held(b)).toBeUndefined();
    expect(b.logs.find((l) => l.startsWith("refused an ACME certificate chain from a peer"))).toContain("its leaf is for another key");
    const before = gets;
    b.x!.advertAll();
    a.x!.advertAll();
    await idle();
    expect(gets).toBe(before); // the refused one is not fetched again
  });

  it("refuses a peer with another key, or with another member's key, garbage and an oversized frame; the store stays empty", async () => {
    const { nodes, start, idle } = cluster(["lb-1", "lb-2"], await freePorts(2));
    const [a, b] = nodes;
    expect(a.store.offer("www", chains.new, "acme").accepted).toBe(true);
    await start(b);
    await start(a, parsePrivateKey(newIdentity().privateKeyPem, "test"));
    await idle();
    expect(held(b)).toBeUndefined();
    expect(b.logs.some((l) => l.startsWith("refused an ACME chain exchange request") && l.includes("bad signature"))).toBe(true);
    // lb-3 is a member, but its key cannot speak for lb-1.
    await a.x!.close();
    b.logs.length = 0;
    await start(a, IDS["lb-3"]);
    await idle();
    expect(held(b)).toBeUndefined();
    expect(b.logs.some((l) => l.startsWith("refused an ACME chain exchange request") && l.includes("bad signature"))).toBe(true);
    const send = (bytes: Buffer) =>
      new Promise<void>((resolve) => {
        const s: Socket = connect({ host: "127.0.0.1", port: b.port }, () => s.write(bytes));
        s.on("close", () => resolve());
        s.on("error", () => undefined);
      });
    const big = Buffer.alloc(8);
    big.writeUInt32BE(1 << 30);
    await send(big); // closed by the server at once, not after reading a GiB
    const junk = Buffer.from("not json");
    const len = Buffer.alloc(4);
    len.writeUInt32BE(junk.length);
    await send(Buffer.concat([len, junk]));
    expect(b.logs.filter((l) => l.startsWith("refused an ACME chain exchange request")).map((l) => /"error":"([^"]+)"/.exec(l)?.[1])).toEqual(
      expect.arrayContaining([expect.stringContaining("more than the"), "the frame is not JSON"]),
    );
    expect(held(b)).toBeUndefined();
  });

  it("a peer that accepts and never answers: one exchange at a time, each ended by the timeout, at most one more queued", async () => {
    const accepted: number[] = [];
    const silent = createServer((s) => {
      accepted.push(Date.now());
      s.on("error", () => undefined);
      s.resume(); // reads and drops the request, so the client's close ends this side too
    });
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    try {
      const [p] = await freePorts(1);
      const store = newStore();
      const x = await startChainExchange({
        selfId: "lb-1",
        listenAddress: "127.0.0.1",
        listenPort: p,
        peers: () => [{ id: "lb-2", address: "127.0.0.1", port: (silent.address() as { port: number }).port }],
        store,
        auth: authOf(IDS["lb-1"]),
        log: silentLogger,
        timeoutMs: 300,
        fatal: () => undefined,
      });
      running.push(x);
      for (let i = 0; i < 10; i++) x.advertAll();
      const t0 = Date.now();
      await x.idle();
      // The boot advert, then one more for the ten requests made meanwhile, only once the first timed out.
      expect(accepted).toHaveLength(2);
      expect(accepted[1] - accepted[0]).toBeGreaterThanOrEqual(250);
      expect(Date.now() - t0).toBeLessThan(2000);
    } finally {
      await new Promise<void>((r) => silent.close(() => r()));
    }
  });
});
