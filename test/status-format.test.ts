/** `fipd status`: the peer key line (issue 17.2). */
import { describe, expect, it } from "vitest";
import type { StatusReport } from "../agent/controller.js";
import { formatPeerKeys, formatStatus, isClusterHealthy } from "../agent/status-format.js";
import { LEADER_STATUS as report } from "./fixtures/status.js";

describe("fipd status: peer keys", () => {
  it("names the members a previous key still waits for", () => {
    const out = formatStatus({ ...report, peerKeys: { current: "0badc0de", previous: "5eed1e55", waitingFor: ["b2", "w1"], retired: null } });
    expect(out).toContain("previous peer key 5eed1e55 still accepted: waiting for b2, w1 to sign with its new identity (this node's is 0badc0de)\n");
  });

  it("says when the previous key was retired", () => {
    const out = formatStatus({
      ...report,
      peerKeys: { current: "0badc0de", previous: null, waitingFor: [], retired: { keyId: "5eed1e55", at: "2026-12-03T08:30:00.000Z" } },
    });
    expect(out).toContain(
      "previous peer key 5eed1e55 retired at 2026-12-03T08:30:00.000Z: every member signs with its new identity (this node's is 0badc0de)\n",
    );
  });

  it("prints no key line with one key and nothing retired, nor for an agent that does not report keys", () => {
    expect(formatPeerKeys({ current: "0badc0de", previous: null, waitingFor: [], retired: null })).toBeNull();
    for (const peerKeys of [undefined, null, { current: "0badc0de", previous: null, waitingFor: [], retired: null }]) {
      expect(formatStatus({ ...report, peerKeys })).not.toMatch(/peer key/);
    }
  });
});

describe("fipd status: ACME certificates", () => {
  it("prints one line per certificate, escaped, and none when ACME is off", () => {
    const out = formatStatus({
      ...report,
      acme: [
        {
          line: "web: failing: ETIMEDOUT: timeout of 1000ms exceeded; next try at 2026-12-03T11:00:00.000Z; serving: placeholder\n(no certificate issued yet)",
        },
      ],
    });
    expect(out).toContain(
      "acme web: failing: ETIMEDOUT: timeout of 1000ms exceeded; next try at 2026-12-03T11:00:00.000Z; serving: placeholder\\u{a}(no certificate issued yet)\n",
    );
    expect(formatStatus({ ...report, acme: null })).not.toMatch(/^acme /m);
  });
});

describe("fipd status --wait-healthy across the wire change (upgrade from the shared-key build)", () => {
  type M = StatusReport["members"][number];
  const member = (id: string, over: Partial<M>): M => ({
    id,
    role: "lb",
    color: "green",
    self: false,
    reachable: false,
    lastHeardMsAgo: null,
    healthy: null,
    eligible: null,
    holdsReservedIp: null,
    build: null,
    rttMs: null,
    ...over,
  });
  // b1 restarted first on the new build: it hears nobody on its wire, the others speak the older one.
  const alone: StatusReport = {
    ...report,
    node: "b1",
    role: "follower",
    leader: null,
    asserting: false,
    colorInForce: "green",
    requestedColor: "green",
    majorityReachable: false,
    members: [
      member("b1", { color: "blue", self: true, healthy: true, eligible: false }),
      member("b2", { color: "blue" }),
      member("g1", {}),
      member("g2", {}),
      member("w", { role: "witness", color: null }),
    ],
  };

  it("passes while every member is reachable or heard on the older wire and this side cannot elect, and says why", () => {
    const v = isClusterHealthy({ ...alone, olderWire: ["b2", "g1", "g2", "w"] });
    expect(v).toEqual({
      ok: true,
      note: "rolling upgrade across the wire change: b2, g1, g2, w still run a build on the older wire format, which this build does not hear; every member is accounted for, and the members on this wire cannot elect a leader of the color in force yet",
    });
    expect(formatStatus({ ...alone, olderWire: ["b2", "g1", "g2", "w"] })).toContain(
      "OLDER WIRE: b2, g1, g2, w run a build whose datagrams this build cannot read; not heard until upgraded\n",
    );
  });

  it("fails when a member is neither reachable nor heard on the older wire, or before anything is heard", () => {
    expect(isClusterHealthy({ ...alone, olderWire: ["b2", "g1", "w"] })).toEqual({ ok: false, why: "this node cannot reach a majority of the members" });
    expect(isClusterHealthy({ ...alone, olderWire: [] })).toMatchObject({ ok: false });
    expect(isClusterHealthy(alone)).toMatchObject({ ok: false });
    expect(isClusterHealthy({ ...alone, shuttingDown: true, olderWire: ["b2", "g1", "g2", "w"] })).toMatchObject({ ok: false });
  });

  it("applies the usual checks once this side has a majority with an eligible member (it must lead and hold the IP)", () => {
    const majority: StatusReport = {
      ...alone,
      majorityReachable: true,
      members: alone.members.map((m) => (m.id === "b2" || m.id === "g2" ? { ...m, reachable: true, healthy: true, eligible: m.id === "g2" } : m)),
    };
    expect(isClusterHealthy({ ...majority, olderWire: ["g1", "w"] })).toEqual({ ok: false, why: "no leader" });
    // A majority here, but nobody here may lead (the color in force is all on the older side): the IP stays where it is.
    const noEligible = { ...majority, members: majority.members.map((m) => ({ ...m, eligible: m.self || m.reachable ? false : null })) };
    expect(isClusterHealthy({ ...noEligible, olderWire: ["g1", "w"] })).toMatchObject({ ok: true });
    // Nor may a member of the other color, which leads here by the color fallback: it hands back once the color in force joins.
    const fallback: StatusReport = {
      ...majority,
      leader: "b2",
      members: majority.members.map((m) => ({ ...m, eligible: m.id === "b2" })),
      reservedIp: { address: "198.51.100.7", onThisDroplet: false, holder: "b2", holderIsLeader: true },
    };
    expect(isClusterHealthy({ ...fallback, olderWire: ["g1", "g2", "w"] })).toMatchObject({ ok: true });
    expect(isClusterHealthy(fallback)).toEqual({ ok: false, why: "leader b2 is not of the color in force (green)" });
    const led: StatusReport = { ...majority, leader: "g2", reservedIp: { address: "198.51.100.7", onThisDroplet: false, holder: "g2", holderIsLeader: true } };
    expect(isClusterHealthy({ ...led, olderWire: ["g1", "w"] })).toEqual({ ok: true });
  });
});
