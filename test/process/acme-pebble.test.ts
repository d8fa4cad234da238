/**
 * fipd's ACME side against a real CA: Pebble (testbed/pebble.ts), the real child bundle
 * (dist/fipd-acme.cjs, so `npm run build` first), the real store, responder and manager, on
 * loopback. Pebble's validation requests come to the responder, as the CA's come to the Reserved IP
 * through HAProxy's be_acme. The multi-LB runs through the network bed are test/e2e's.
 *
 * "The CA unreachable" is a TCP relay in front of Pebble that swallows connections (as an nft drop
 * would): Pebble keeps running, so its root stays the same.
 */
import { execFileSync } from "node:child_process";
import { createPublicKey, generateKeyPairSync, X509Certificate } from "node:crypto";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, connect, type Server, type Socket } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AcmeManager, type FailureKind } from "../../agent/acme/manager.js";
import { startAcmeResponder, type AcmeResponder } from "../../agent/acme/responder.js";
import { AcmeStore } from "../../agent/acme/store.js";
import { AcmeSchema, type AcmeConfig } from "../../agent/config.js";
import type { Logger } from "../../agent/log.js";
import { check } from "../../agent/schema.js";
import { startPebble, type Pebble } from "../../testbed/pebble.js";

const CHILD = resolve(__dirname, "..", "..", "dist", "fipd-acme.cjs");
const DOMAINS = ["web.example.com", "www.example.com"];
/** Pebble's certificates live this long, so a renewal (at half of it left) comes within the test. */
const VALIDITY_S = 30;

async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** A relay to Pebble's ACME port that can be made to swallow connections, like dropped packets. */
async function startRelay(to: number): Promise<{ port: number; drop: boolean; close(): Promise<void> }> {
  const held: Socket[] = [];
  const relay = { port: 0, drop: false, close: async () => undefined as void };
  const server: Server = createServer((client) => {
    held.push(client);
    client.on("error", () => undefined);
    if (relay.drop) return; // accepted, never answered: the TLS handshake times out
    const upstream = connect(to, "127.0.0.1");
    held.push(upstream);
    upstream.on("error", () => client.destroy());
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  relay.port = (server.address() as { port: number }).port;
  relay.close = () =>
    new Promise((r) => {
      for (const s of held) s.destroy();
      server.close(() => r());
    });
  return relay;
}

/** The manager's log lines, shown when a wait times out. */
const logs: string[] = [];
const memoryLogger = (fields: Record<string, unknown> = {}): Logger => {
  const line = (level: string) => (msg: string, f?: Record<string, unknown>) => void logs.push(`${level} ${msg} ${JSON.stringify({ ...fields, ...f })}`);
  return {
    debug: line("debug"),
    info: line("info"),
    warn: line("warn"),
    error: line("error"),
    crit: line("crit"),
    child: (f) => memoryLogger({ ...fields, ...f }),
  };
};

async function until<T>(what: string, timeoutMs: number, f: () => T | undefined | null | false): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v) return v;
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; log:\n${logs.slice(-15).join("\n")}\npebble:\n${pebble.log().slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const childProcesses = (path: string) => {
  try {
    return execFileSync("pgrep", ["-f", path], { encoding: "utf8" }).trim().split("\n").filter(Boolean);
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
};

let dir: string;
let childPath: string;
let pebble: Pebble;
let relay: Awaited<ReturnType<typeof startRelay>>;
let responder: AcmeResponder;
/** The store the responder answers from: each test has its own (its own node). */
let current: AcmeStore | null = null;
let served = 0;
let certKeyPem: string;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "halb-acme-pebble-"));
  // A copy of the child at a path of this test's own, so pgrep finds only this test's children.
  childPath = join(dir, "fipd-acme.cjs");
  copyFileSync(CHILD, childPath);
  // The stack's keys: ECDSA P-256 in SEC1 PEM, as @pulumi/tls writes private_key_pem.
  const key = () => generateKeyPairSync("ec", { namedCurve: "P-256" }).privateKey.export({ type: "sec1", format: "pem" }) as string;
  writeFileSync(join(dir, "web.account.key"), key(), { mode: 0o640 });
  certKeyPem = key();
  writeFileSync(join(dir, "web.key"), certKeyPem, { mode: 0o640 });
  responder = await startAcmeResponder({
    port: 0,
    store: { keyAuthorization: (t) => current?.keyAuthorization(t) },
    onServed: () => served++,
  });
  const [acmePort, managementPort, dnsPort, dnsManagementPort] = [await freePort(), await freePort(), await freePort(), await freePort()];
  pebble = await startPebble({
    dnsTarget: "127.0.0.1",
    httpPort: responder.port,
    acmePort,
    managementPort,
    dnsPort,
    dnsManagementPort,
    certificateValiditySeconds: VALIDITY_S,
  });
  relay = await startRelay(acmePort);
}, 60_000);

afterAll(async () => {
  await relay?.close();
  await pebble?.stop();
  await responder?.close();
  rmSync(dir, { recursive: true, force: true });
});

function setup(acme: Record<string, unknown>) {
  const stateDir = mkdtempSync(join(dir, "state-"));
  const r = check(AcmeSchema, {
    stateDir,
    keyDir: dir,
    checkIntervalMs: 200,
    requestTimeoutMs: 5_000,
    stepTimeoutMs: 20_000,
    orderDeadlineMs: 60_000,
    ...acme,
    certificates: [
      { name: "web", domains: DOMAINS, email: "ops@example.com", directoryUrl: `https://127.0.0.1:${relay.port}/dir`, directoryCaFile: pebble.caFile },
    ],
  });
  if (!r.ok) throw new Error(JSON.stringify(r.issues.map((i) => i.message)));
  const config: AcmeConfig = r.value;
  const store = new AcmeStore({
    stateDir,
    nowMs: () => Date.now(),
    publicKeyFor: (n) => (n === "web" ? createPublicKey(certKeyPem) : undefined),
    domainsFor: (n) => (n === "web" ? DOMAINS : undefined),
  });
  current = store;
  const failures: { atMs: number; kind: FailureKind }[] = [];
  const tokens: string[] = [];
  const manager = new AcmeManager({
    config,
    store,
    log: memoryLogger(),
    nowMs: () => Date.now(),
    childPath,
    onFailure: (_n, kind) => failures.push({ atMs: Date.now(), kind }),
    onToken: (t) => tokens.push(t),
    // The longest wait each time: the gaps below are then exact lower bounds.
    random: () => 0.999,
  });
  return { stateDir, store, manager, failures, tokens, config };
}

describe("ACME orders against Pebble", () => {
  it("issues the first certificate through the responder, then renews it when its renewal falls due", async () => {
    relay.drop = false;
    const { stateDir, store, manager, tokens } = setup({ renewAtRemainingFraction: 0.5 });
    const servedBefore = served;
    expect(manager.status()[0].line).toBe("web: placeholder (no certificate issued yet)");
    manager.setLeading(true);
    try {
      const first = await until("the first certificate", 40_000, () => store.chain("web"));
      // Pebble validated through the responder, once per domain, with the tokens fipd published.
      expect(served - servedBefore).toBeGreaterThanOrEqual(DOMAINS.length);
      expect(tokens.length).toBe(DOMAINS.length);
      const certs = first.pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g)!.map((p) => new X509Certificate(p));
      for (const d of DOMAINS) expect(certs[0].checkHost(d)).toBe(d);
      // The chain ends at this Pebble's root.
      expect(certs[certs.length - 1].verify(new X509Certificate(pebble.rootPem()).publicKey)).toBe(true);
      expect(readFileSync(join(stateDir, "web.chain.pem"), "utf8")).toBe(first.pem);
      expect(first.notAfterMs - first.notBeforeMs).toBeLessThanOrEqual((VALIDITY_S + 1) * 1000);
      expect(manager.status()[0]).toMatchObject({ state: "valid", notAfter: new Date(first.notAfterMs).toISOString() });
      expect(manager.timestamps()[0]).toMatchObject({
        expiryS: Math.floor(first.notAfterMs / 1000),
        renewalDueS: Math.floor(manager.renewalDueMs(first) / 1000),
      });

      // Half the lifetime left: the manager orders again, and the newer chain replaces the first.
      const second = await until("the renewed certificate", 45_000, () => store.chain("web")?.sha256 !== first.sha256 && store.chain("web"));
      expect(second.notAfterMs).toBeGreaterThan(first.notAfterMs);
      expect(Date.now()).toBeGreaterThanOrEqual(manager.renewalDueMs(first));
      expect(readFileSync(join(stateDir, "web.chain.pem"), "utf8")).toBe(second.pem);
      expect(tokens.length).toBe(2 * DOMAINS.length);
    } finally {
      manager.close();
    }
  }, 100_000);

  it("keeps the placeholder while a domain resolves elsewhere (not to the Reserved IP), says why, backs off, and issues once DNS points here", async () => {
    relay.drop = false;
    // Pebble's DNS sends www.example.com to 127.0.0.2, where no responder listens: the CA's check fails there.
    pebble.setA("www.example.com", "127.0.0.2");
    const { store, manager, failures } = setup({ retryInitialMs: 1_000, retryMaxMs: 2_000 });
    manager.setLeading(true);
    try {
      await until("two failed orders", 40_000, () => failures.length >= 2);
      expect(store.chain("web")).toBeUndefined();
      expect(
        failures.map((f) => f.kind),
        logs.slice(-6).join("\n"),
      ).toEqual(failures.map(() => "validation"));
      const s = manager.status()[0];
      expect(s.state).toBe("failing");
      expect(s.line).toMatch(/^web: failing: .*127\.0\.0\.2.*; next try at 20\d\d-.*; serving: placeholder \(no certificate issued yet\)$/);
      expect(failures[1].atMs - failures[0].atMs).toBeGreaterThanOrEqual(1_000 * 0.999);

      pebble.clearA("www.example.com");
      const chain = await until("the certificate once DNS points here", 40_000, () => store.chain("web"));
      expect(chain.notAfterMs).toBeGreaterThan(Date.now());
      expect(manager.status()[0]).toMatchObject({ state: "valid", lastError: null });
    } finally {
      manager.close();
      pebble.clearA("www.example.com");
    }
  }, 100_000);

  it("keeps the placeholder while the CA is unreachable, says why, backs off, and orders once it is back", async () => {
    relay.drop = true;
    const { store, manager, failures, config } = setup({ requestTimeoutMs: 1_000, retryInitialMs: 1_000, retryMaxMs: 4_000 });
    manager.setLeading(true);
    try {
      await until("three failed orders", 30_000, () => failures.length >= 3);
      expect(store.chain("web")).toBeUndefined();
      expect(
        failures.map((f) => f.kind),
        logs.slice(-6).join("\n"),
      ).toEqual(failures.map(() => "unreachable"));
      const s = manager.status()[0];
      expect(s.state).toBe("failing");
      expect(s.line).toMatch(/^web: failing: .*timeout.*; next try at 20\d\d-.*; serving: placeholder \(no certificate issued yet\)$/);
      // Backoff: each wait at least the previous doubled (1 s, 2 s, 4 s; jitter pinned high), plus the 1 s request timeout.
      const gaps = failures.slice(1).map((f, i) => f.atMs - failures[i].atMs);
      expect(gaps[0]).toBeGreaterThanOrEqual(1_000 * 0.999 + 900);
      expect(gaps[1]).toBeGreaterThanOrEqual(2_000 * 0.999 + 900);

      // Leadership ends while an order hangs (now for up to 30 s a request): the child is stopped at once.
      manager.updateConfig({ ...config, requestTimeoutMs: 30_000 });
      await until("an order in progress", 10_000, () => manager.status()[0].state === "renewing");
      await new Promise((r) => setTimeout(r, 1_000));
      expect(childProcesses(childPath).length).toBe(1);
      manager.setLeading(false);
      await until("the child to stop", 2_000, () => childProcesses(childPath).length === 0);
      expect(manager.status()[0].line).toMatch(/retried by the leader/);

      relay.drop = false;
      manager.setLeading(true);
      const chain = await until("the certificate once the CA is back", 40_000, () => store.chain("web"));
      expect(chain.notAfterMs).toBeGreaterThan(Date.now());
      expect(manager.status()[0]).toMatchObject({ state: "valid", lastError: null });
    } finally {
      manager.close();
      relay.drop = false;
    }
  }, 100_000);
});
