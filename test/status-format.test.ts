/** `fipd status`: the peer key line (issue 17.2). */
import { describe, expect, it } from "vitest";
import type { StatusReport } from "../agent/controller.js";
import { formatPeerKeys, formatStatus } from "../agent/status-format.js";

const report: StatusReport = {
  node: "b1",
  role: "leader",
  term: 3,
  leader: "b1",
  asserting: true,
  leaseValidForMs: 900,
  healthy: true,
  maintenance: false,
  colorInForce: "blue",
  requestedColor: "blue",
  pendingSwitch: null,
  colorFallback: null,
  membershipVersion: 1,
  jointOldMembers: null,
  majorityReachable: true,
  members: [],
  reservedIp: null,
  ipKeeper: null,
  shuttingDown: false,
  uptimeS: 10,
  build: null,
};

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
