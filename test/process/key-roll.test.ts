/**
 * An identity key roll on real fipd processes (issue 17.2, 13.8): every member gets a new identity;
 * the agents reload one by one; a member that is down holds the old identities accepted (and status
 * names it); once it is back, with its new identity only, every agent retires the old ones, and a
 * datagram signed with one is dropped and counted. The witness's key cannot speak for an LB.
 */
import { execFile } from "node:child_process";
import { createSocket } from "node:dgram";
import { readFileSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { afterEach, describe, expect, it } from "vitest";
import { parsePrivateKey } from "../../agent/identity.js";
import type { AgentStatus } from "../../agent/status-format.js";
import { encodePacket } from "../../agent/transport.js";
import { BUNDLE, LocalCluster } from "../../testbed/harness/local-cluster.js";
import { freePort } from "../../testbed/harness/ports.js";
import { newIdentity } from "../../testbed/identity.js";

const run = promisify(execFile);
const fipdStatus = async (socket: string) => (await run(process.execPath, [BUNDLE, "status", "--socket", socket], { timeout: 20_000 })).stdout;

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

describe("peer key roll", () => {
  it("retires the old key once every member signs with the new one; a member down during the roll holds it, and comes back with the new key only", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true });
    const c = cluster;
    const metricsPort = await freePort();
    const one = c.node("lb-blue-1");
    one.config = { ...one.config, metrics: { enabled: true, address: "127.0.0.1", port: metricsPort } };
    c.writeConfig(one);
    c.startAll();
    const leaderHoldsIp = async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    };
    // Generous waits: two cores shared with other work; the election's own speed is tested elsewhere.
    const WAIT_MS = 60_000;
    await c.waitFor("a leader holding the IP", leaderHoldsIp, WAIT_MS);
    const status = async (id: string) => (await c.status(id)) as AgentStatus | null;

    // lb-blue-2 is down for the whole roll.
    await c.stopNode("lb-blue-2", "SIGTERM");
    await c.waitFor("a leader holding the IP without lb-blue-2", leaderHoldsIp, WAIT_MS);
    // The roll: a new identity for every member (as peerKeyGeneration + 1 does), the old one kept as previous.
    const ids = ["lb-blue-1", "lb-blue-2", "witness"];
    const oldFile = (id: string) => c.keyFile(id);
    const newFile = (id: string) => `${c.keyFile(id)}.new`;
    const load = (file: string) => parsePrivateKey(readFileSync(file, "utf8"), `in ${file}`);
    const old = Object.fromEntries(ids.map((id) => [id, load(oldFile(id))]));
    for (const id of ids) writeFileSync(newFile(id), newIdentity().privateKeyPem, { mode: 0o600 });
    const next = Object.fromEntries(ids.map((id) => [id, load(newFile(id))]));
    const rolled = ids.map((id) => ({ id, publicKey: next[id].text, previousPublicKey: old[id].text }));
    for (const id of ["witness", "lb-blue-1"]) {
      const h = c.node(id);
      h.config = { ...h.config, peerAuth: { keyFile: newFile(id), previousKeyFile: oldFile(id), publicKeys: rolled } };
      c.writeConfig(h);
      expect(await c.request(id, { cmd: "reload" })).toMatchObject({ ok: true });
    }
    const waiting = await c.waitFor(
      "the running members confirmed the new key; the old one waits for lb-blue-2",
      async () => {
        const st = await status("lb-blue-1");
        return st?.peerKeys?.waitingFor.join(",") === "lb-blue-2" ? st : null;
      },
      WAIT_MS,
    );
    expect(waiting.peerKeys).toMatchObject({ current: next["lb-blue-1"].id, previous: old["lb-blue-1"].id, retired: null });
    expect(await fipdStatus(one.socket)).toContain(
      `previous peer key ${old["lb-blue-1"].id} still accepted: waiting for lb-blue-2 to sign with its new identity (this node's is ${next["lb-blue-1"].id})\n`,
    );
    await c.waitFor("a leader holding the IP during the roll", leaderHoldsIp, WAIT_MS);

    // lb-blue-2 comes back with what the stack gives it after the roll: new identities, nothing old.
    const two = c.node("lb-blue-2");
    two.config = { ...two.config, peerAuth: { keyFile: newFile("lb-blue-2"), publicKeys: ids.map((id) => ({ id, publicKey: next[id].text })) } };
    c.writeConfig(two);
    c.startNode("lb-blue-2");
    await c.waitFor(
      "every agent that had the old key retired it",
      async () => {
        const sts = await Promise.all(["lb-blue-1", "witness"].map(status));
        return sts.every((st, i) => st?.peerKeys?.retired?.keyId === old[["lb-blue-1", "witness"][i]].id && st.peerKeys.previous === null) ? sts : null;
      },
      WAIT_MS,
    );
    expect((await status("lb-blue-2"))?.peerKeys).toEqual({ current: next["lb-blue-2"].id, previous: null, waitingFor: [], retired: null });
    expect(await fipdStatus(one.socket)).toMatch(
      new RegExp(
        `previous peer key ${old["lb-blue-1"].id} retired at \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z: every member signs with its new identity \\(this node's is ${next["lb-blue-1"].id}\\)\\n`,
      ),
    );
    await c.waitFor(
      "lb-blue-2 reachable from lb-blue-1",
      async () => (await status("lb-blue-1"))?.members.find((m) => m.id === "lb-blue-2")?.reachable === true,
      WAIT_MS,
    );
    await c.waitFor("a leader holding the IP after the roll", leaderHoldsIp, WAIT_MS);

    // A datagram signed with lb-blue-2's old identity (as a leaked key's holder would send it), and one
    // signed with the witness's current key claiming to be lb-blue-2: both dropped and counted.
    const sock = createSocket("udp4");
    const body = Buffer.from(JSON.stringify({ kind: "release", from: "lb-blue-2", term: 1, successor: null, colorInForce: "blue", reason: "forged" }));
    for (const pkt of [
      encodePacket(old["lb-blue-2"], 1n << 62n, 1n, "lb-blue-2", "lb-blue-1", body),
      encodePacket(next.witness, 1n << 62n, 2n, "lb-blue-2", "lb-blue-1", body),
    ])
      await new Promise<void>((r) => sock.send(pkt, one.port, "127.0.0.1", () => r()));
    sock.close();
    const lines = ['fipd_peer_packets_dropped_total{reason="retired-key"} 1', 'fipd_peer_packets_dropped_total{reason="wrong-signer"} 1'];
    await c.waitFor(
      "the old-key datagram counted as retired-key, the witness-key one as wrong-signer",
      async () => {
        const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
        return lines.every((l) => text.includes(l));
      },
      WAIT_MS,
    );
  });
});
