/**
 * Automatic HTTPS (issue 15) end to end in network namespaces (testbed/netbed/bed.ts): Pebble and its
 * DNS in the client namespace, every name answering the Reserved IP, so Pebble's HTTP-01 validation
 * crosses the router's NAT to the holder's HAProxy and fipd's responder; real fipd on three LBs and a
 * witness, the keys shipped as the stack ships them, and the stack's root-run install putting each
 * chain fipd writes into HAProxy (the bed's poll of the state dirs stands for the systemd path unit).
 *
 * One bed, in order: the CA unreachable (placeholder, status, backoff), the first issuance while one
 * LB's fipd is down (every running LB serves it, through the Reserved IP too), that LB's return (the
 * chain exchange catches it up), kill -9 of the leader (the new holder serves the same certificate,
 * no new order), and a renewal forced by a larger renewal fraction in the config.
 *
 * Needs root, ip, nft, haproxy, curl, openssl, pebble and pebble-challtestsrv; `npm run build` first.
 */
import { X509Certificate } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NetBed, RESERVED_IP, shAsync } from "../../testbed/netbed/bed.js";

const NAME = "web";
const DOMAINS = ["www.example.com", "app.example.com"];
const LBS = ["lb-blue-1", "lb-blue-2", "lb-green-1"];
/** The LB whose fipd is down while the certificate is issued. */
const LATE = "lb-green-1";
/** Pebble's certificates live 5 minutes: renewal (a third left) is not due within the file, until the renewal test raises the fraction. */
const VALIDITY_S = 300;
const TIMING = { checkIntervalMs: 500, requestTimeoutMs: 2_000, stepTimeoutMs: 10_000, orderDeadlineMs: 30_000, retryInitialMs: 1_000, retryMaxMs: 4_000 };

let bed: NetBed;
let rootFile: string;

beforeAll(async () => {
  bed = await NetBed.start({
    lbs: ["blue", "blue", "green"],
    witness: true,
    lb: {
      frontends: [
        { port: 80, protocol: "http", pool: "web" },
        { port: 443, protocol: "https", pool: "web", certificates: [NAME] },
      ],
      pools: { web: { servers: ["@APP@"] } },
    },
    acme: { certificates: [{ name: NAME, domains: DOMAINS }], certificateValiditySeconds: VALIDITY_S, timing: { ...TIMING } },
  });
  rootFile = join(bed.dir, "pebble-root.pem");
  writeFileSync(rootFile, bed.pebble!.rootPem());
  // The CA is unreachable from the start: the first test sees the leader fail and back off.
  bed.blockAcmeDirectory(true);
  for (const id of LBS) await bed.installHaproxy(id);
  for (const id of bed.nodes.keys()) await bed.startAgent(id);
  await bed.waitForStableLeader();
}, 120_000);

afterAll(async () => {
  await bed?.close();
}, 60_000);

/** The leaf served on `ip`:443 for SNI www.example.com, seen from the client namespace: its SHA-256 fingerprint and issuer, or null. */
async function served(ip: string): Promise<{ fingerprint: string; issuer: string } | null> {
  const r = await shAsync("ip", [
    "netns",
    "exec",
    "halb-cl",
    "sh",
    "-c",
    `timeout 5 openssl s_client -connect ${ip}:443 -servername ${DOMAINS[0]} </dev/null 2>/dev/null | openssl x509 -noout -fingerprint -sha256 -issuer -nameopt RFC2253`,
  ]);
  const fp = r.out.match(/Fingerprint=([0-9A-F:]+)/)?.[1];
  const issuer = r.out.match(/^issuer=(.*)$/m)?.[1];
  return fp && issuer !== undefined ? { fingerprint: fp, issuer } : null;
}

/** An HTTPS request through the Reserved IP for `host`, verified against Pebble's root: who served it, or null. */
async function httpsVerified(host: string): Promise<{ servedBy: string } | { error: string }> {
  const r = await shAsync("ip", [
    "netns",
    "exec",
    "halb-cl",
    "curl",
    "-sS",
    "--max-time",
    "3",
    "--cacert",
    rootFile,
    "--resolve",
    `${host}:443:${RESERVED_IP}`,
    "-D",
    "-",
    "-o",
    "/dev/null",
    `https://${host}/`,
  ]);
  if (r.code !== 0) return { error: r.err.trim() };
  return { servedBy: r.out.match(/^x-served-by:\s*(\S+)/im)?.[1] ?? "" };
}

/** The leaf of a PEM chain: its fingerprint as openssl prints it, and its serial. */
function leafOf(pem: string): { fingerprint: string; serial: string; notBeforeMs: number; notAfterMs: number } {
  const leaf = new X509Certificate(pem.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/)![0]);
  return { fingerprint: leaf.fingerprint256, serial: leaf.serialNumber, notBeforeMs: Date.parse(leaf.validFrom), notAfterMs: Date.parse(leaf.validTo) };
}

/** The orders Pebble has taken so far (its log names each one it stores). */
const pebbleOrders = () => (bed.pebble!.log().match(/Added order/g) ?? []).length;

/** fipd's log lines on a node with this message, parsed. */
function logLines(id: string, msg: string): Array<Record<string, unknown> & { ts: string }> {
  return readFileSync(join(bed.node(id).dir, "fipd.log"), "utf8")
    .split("\n")
    .filter((l) => l.includes(`"msg":"${msg}"`))
    .map((l) => JSON.parse(l) as Record<string, unknown> & { ts: string });
}

/**
 * Start a node's agent and wait until it answers on its control socket: an apply-config that runs
 * before that finds no agent to reload, while the agent has already read the previous files.
 */
async function startAgent(id: string): Promise<void> {
  await bed.startAgent(id);
  await bed.waitFor(`${id}'s agent answering`, async () => (await bed.status(id)) !== null, 10_000, 100);
}

/** Wait until every LB in `ids` serves the leaf with this fingerprint on its anchor address. */
async function waitServedEverywhere(ids: string[], fingerprint: string, timeoutMs: number): Promise<void> {
  await bed.waitFor(
    `${ids.join(", ")} serving ${fingerprint.slice(0, 20)}…`,
    async () => {
      for (const id of ids) if ((await served(bed.node(id).anchorIp!))?.fingerprint !== fingerprint) return false;
      return true;
    },
    timeoutMs,
    250,
  );
}

describe("automatic HTTPS over ACME in network namespaces", () => {
  it("the CA unreachable: the placeholder stays, fipd status says why, and the leader backs off", async () => {
    await bed.waitForStableLeader();
    // Whichever LB leads (leadership may move once while the cluster settles) fails three times in a row.
    const { failures } = await bed.waitFor(
      "three failed orders on one LB",
      async () => {
        for (const id of LBS) {
          const f = logLines(id, "ACME order failed");
          if (f.length >= 3) return { id, failures: f };
        }
        return null;
      },
      30_000,
      250,
    );
    // Each failure is the unreachable CA, and each wait doubles (equal jitter: half of 1 s, 2 s, 4 s at least).
    expect(failures.map((f) => f.kind)).toEqual(failures.map(() => "unreachable"));
    const waits = failures.slice(0, 3).map((f) => Date.parse(f.nextTryAt as string) - Date.parse(f.ts));
    expect(waits[0]).toBeGreaterThanOrEqual(500);
    expect(waits[0]).toBeLessThanOrEqual(1_000);
    expect(waits[1]).toBeGreaterThanOrEqual(1_000);
    expect(waits[2]).toBeGreaterThanOrEqual(2_000);
    // No order before its time: each failure comes after the previous one's next try.
    for (let i = 1; i < 3; i++) expect(Date.parse(failures[i].ts)).toBeGreaterThanOrEqual(Date.parse(failures[i - 1].nextTryAt as string));
    // Between two tries (not while one runs, which says "renewing"), the leading LB's `fipd status` says why and when next.
    const failing = /acme web: failing: .*(timeout|timed out|ETIMEDOUT).*; next try at 20\d\d-.*; serving: placeholder/i;
    const st = await bed.waitFor(
      "fipd status between two tries",
      async () => {
        for (const id of LBS) {
          const r = await bed.fipd(id, ["status"]);
          if (r.code === 0 && failing.test(r.out)) return r;
        }
        return null;
      },
      20_000,
      100,
    );
    expect(st.out).toMatch(failing);
    expect(pebbleOrders()).toBe(0);
    // Every LB, and the Reserved IP, still serve the self-signed placeholder.
    const placeholder = leafOf(bed.acmePlaceholder(NAME).certificate).fingerprint;
    for (const ip of [RESERVED_IP, ...LBS.map((id) => bed.node(id).anchorIp!)]) expect((await served(ip))?.fingerprint, ip).toBe(placeholder);
    for (const id of LBS) expect(bed.acmeChain(id, NAME), id).toBeNull();
  }, 60_000);

  it("first issuance (one LB's fipd down): the leader's chain is served by every running LB and through the Reserved IP", async () => {
    await bed.stopAgent(LATE);
    const leader = await bed.waitForStableLeader();
    expect(leader).not.toBe(LATE);
    bed.blockAcmeDirectory(false);
    // The backoff is at most retryMaxMs: the next try reaches Pebble and validates through the NAT.
    const running = LBS.filter((id) => id !== LATE);
    // On the leader first (or on whichever LB leads by then: the chain is the same).
    const chain = await bed.waitFor("an issued chain", async () => running.map((id) => bed.acmeChain(id, NAME)).find((c) => c !== null), 40_000, 250);
    const leaf = leafOf(chain);
    expect(pebbleOrders()).toBe(1);
    await waitServedEverywhere(running, leaf.fingerprint, 20_000);
    for (const id of running) expect(leafOf(bed.acmeChain(id, NAME)!).serial, id).toBe(leaf.serial);
    expect((await served(RESERVED_IP))?.fingerprint).toBe(leaf.fingerprint);
    // A client that trusts Pebble's root only: the chain verifies for both names, served by the holder.
    for (const host of DOMAINS) expect(await httpsVerified(host), host).toEqual({ servedBy: bed.holder() });
    // The LB whose fipd was down has nothing yet and still serves the placeholder.
    expect(bed.acmeChain(LATE, NAME)).toBeNull();
    expect((await served(bed.node(LATE).anchorIp!))?.fingerprint).toBe(leafOf(bed.acmePlaceholder(NAME).certificate).fingerprint);
    const st = await bed.fipd(bed.holder() ?? leader, ["status"]);
    expect(st.out).toMatch(new RegExp(`acme web: valid until ${new Date(leaf.notAfterMs).toISOString().slice(0, 16)}`));
  }, 90_000);

  it("an LB whose fipd was down while the certificate was issued receives it on return and serves it", async () => {
    const leader = await bed.waitForStableLeader();
    const issued = leafOf(bed.acmeChain(leader, NAME)!);
    const orders = pebbleOrders();
    if (!bed.node(LATE).agent) await startAgent(LATE);
    await bed.waitFor("the chain on the returning LB", async () => bed.acmeChain(LATE, NAME), 20_000, 250);
    expect(leafOf(bed.acmeChain(LATE, NAME)!).serial).toBe(issued.serial);
    await waitServedEverywhere([LATE], issued.fingerprint, 20_000);
    expect(logLines(LATE, "took a newer ACME certificate chain from a peer").length).toBeGreaterThanOrEqual(1);
    expect(pebbleOrders()).toBe(orders);
  }, 60_000);

  it("kill -9 of the leader: the new holder serves the same certificate at once, without a new order", async () => {
    const victim = await bed.waitForStableLeader();
    const issued = leafOf(bed.acmeChain(victim, NAME)!);
    const orders = pebbleOrders();
    const killedAtMs = Date.now();
    await bed.stopAgent(victim, "SIGKILL");
    try {
      await afterKill();
    } finally {
      await startAgent(victim);
    }
    async function afterKill() {
      const next = await bed.waitFor(
        "another LB holding the Reserved IP and serving HTTPS through it",
        async () => {
          const l = await bed.leader();
          if (!l || l === victim || bed.holder() !== l) return null;
          const r = await httpsVerified(DOMAINS[0]);
          return "servedBy" in r && r.servedBy === l ? l : null;
        },
        30_000,
        100,
      );
      expect((await served(RESERVED_IP))?.fingerprint).toBe(issued.fingerprint);
      // The new leader checks at once and then every checkIntervalMs: several checks, and no order.
      await bed.waitFor("the new leader checking its certificates", async () => logLines(next, "leading: checking the ACME certificates").length > 0, 10_000);
      await new Promise((r) => setTimeout(r, 6 * TIMING.checkIntervalMs));
      expect(pebbleOrders()).toBe(orders);
      expect(logLines(next, "ordering a certificate").filter((l) => Date.parse(l.ts) >= killedAtMs)).toEqual([]);
      expect((await bed.fipd(next, ["status"])).out).toMatch(/acme web: valid until/);
    }
  }, 60_000);

  it("renewal: a larger renewal fraction makes the certificate due; the leader orders again and every LB serves the newer one", async () => {
    const leader = await bed.waitForStableLeader();
    const old = leafOf(bed.acmeChain(leader, NAME)!);
    const orders = pebbleOrders();
    // 0.9 of 300 s: due 30 s after issuance. The config reaches the running agents by apply-config's reload.
    bed.opts.acme!.timing = { ...TIMING, renewAtRemainingFraction: 0.9 };
    for (const id of LBS) expect(await bed.applyConfig(id), id).toContain("running agent reloaded the configuration");
    // Every LB took the fraction (whoever leads at renewal time renews): its status names the earlier due time.
    for (const id of LBS) {
      const due = new Date(old.notAfterMs - 0.9 * (old.notAfterMs - old.notBeforeMs)).toISOString();
      expect((await bed.fipd(id, ["status"])).out, id).toContain(`(renewal due ${due})`);
    }
    const renewed = await bed.waitFor(
      "a renewed chain on the leader",
      async () => {
        const c = bed.acmeChain(bed.holder() ?? leader, NAME);
        return c && leafOf(c).serial !== old.serial ? leafOf(c) : null;
      },
      60_000,
      250,
    );
    expect(renewed.notAfterMs).toBeGreaterThan(old.notAfterMs);
    expect(pebbleOrders()).toBe(orders + 1);
    await waitServedEverywhere(LBS, renewed.fingerprint, 20_000);
    expect(await httpsVerified(DOMAINS[1])).toMatchObject({ servedBy: bed.holder() });
  }, 90_000);

  it("a failover during an order: the tokens are on every LB, the old leader's order dies with it, the new leader orders and every LB serves the result", async () => {
    const victim = await bed.waitForStableLeader();
    const old = leafOf(bed.acmeChain(victim, NAME)!);
    // Pebble names each validation's URL, token included (fipd's logs redact the token).
    const validations = () =>
      [...bed.pebble!.log().matchAll(/Attempting to validate w\/ HTTP: \S*\/\.well-known\/acme-challenge\/([A-Za-z0-9_-]+)/g)].map((m) => m[1]);
    const seen = validations().length;
    // Validation cannot reach the holder: the next renewal (0.9 of the lifetime since the renewal test) hangs in validation.
    bed.blockValidation(true);
    try {
      const token = await bed.waitFor("Pebble validating a new order", async () => validations()[seen] ?? null, 45_000, 100);
      // Every running LB answers the token on its own address (the peers got it over the acme-token side message).
      await bed.waitFor(
        "the token on every LB",
        async () => {
          for (const id of LBS) {
            const r = await shAsync("ip", [
              "netns",
              "exec",
              "halb-cl",
              "curl",
              "-sS",
              "--max-time",
              "2",
              "-H",
              `Host: ${DOMAINS[0]}`,
              `http://${bed.node(id).anchorIp}/.well-known/acme-challenge/${token}`,
            ]);
            if (!r.out.startsWith(`${token}.`)) return false;
          }
          return true;
        },
        5_000,
        100,
      );
      expect(bed.acmeChildren(victim).length).toBe(1);
      const orders = pebbleOrders();
      await bed.stopAgent(victim, "SIGKILL");
      try {
        // The child sees its stdin close and exits: the old leader works on no order any more.
        await bed.waitFor("the old leader's ACME child gone", async () => bed.acmeChildren(victim).length === 0, 5_000, 100);
        const next = await bed.waitFor(
          "a new leader holding the Reserved IP",
          async () => {
            const l = await bed.leader();
            return l && l !== victim && bed.holder() === l ? l : null;
          },
          30_000,
          100,
        );
        bed.blockValidation(false);
        const renewed = await bed.waitFor(
          "a newer chain on the new leader",
          async () => {
            const c = bed.acmeChain(next, NAME);
            return c && leafOf(c).serial !== old.serial ? leafOf(c) : null;
          },
          40_000,
          250,
        );
        expect(pebbleOrders()).toBeGreaterThan(orders);
        await waitServedEverywhere(
          LBS.filter((id) => id !== victim),
          renewed.fingerprint,
          20_000,
        );
        expect(await httpsVerified(DOMAINS[0])).toEqual({ servedBy: next });
      } finally {
        await startAgent(victim);
      }
    } finally {
      bed.blockValidation(false);
    }
  }, 120_000);
});
