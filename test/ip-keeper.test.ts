/** The IP keeper when metadata and the API disagree: backoff, one log line, a metric. */
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { IpKeeper, type ReservedIpApi } from "../agent/ip-keeper.js";
import { createLogger } from "../agent/log.js";

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["setTimeout", "clearTimeout", "Date", "performance"] });
});
afterEach(() => {
  vi.useRealTimers();
});

function keeperWith(metadataSaysHere: () => boolean) {
  const lines: Array<{ level: string; msg: string }> = [];
  const log = createLogger({ level: "info", nodeId: "lb1", write: (l) => lines.push(JSON.parse(l) as { level: string; msg: string }) });
  let assigns = 0;
  let disagreements = 0;
  const api: ReservedIpApi = {
    getReservedIp: async () => ({ dropletId: 7, locked: false }),
    assign: async () => {
      assigns++;
      return { alreadyAssigned: false };
    },
  };
  const keeper = new IpKeeper({
    reservedIp: "198.51.100.100",
    dropletId: 7,
    metadata: { reservedIpv4: async () => (metadataSaysHere() ? { active: true, ipAddress: "198.51.100.100" } : { active: false, ipAddress: null }) },
    api,
    log,
    checkIntervalMs: 250,
    verifyIntervalMs: 300_000,
    assignDeadlineMs: 60_000,
    onMetadataDisagreement: () => disagreements++,
    now: () => performance.now(),
  });
  return { keeper, lines, counts: () => ({ assigns, disagreements }) };
}

describe("IpKeeper when metadata says 'not here' after a confirmed assign", () => {
  it("re-assigns with backoff (not on every check), warns once and counts it", async () => {
    const { keeper, lines, counts } = keeperWith(() => false);
    keeper.start(1);
    await vi.advanceTimersByTimeAsync(10_000);
    // 40 checks in 10 s; assigns at 0 s, then 5 s and 15 s (backoff): 2 in 10 s.
    expect(counts().assigns).toBe(2);
    expect(counts().disagreements).toBe(1);
    await vi.advanceTimersByTimeAsync(110_000);
    // Re-assigns at 5, 15, 35, 75 s, then every 60 s (135 s...): bounded, whatever the checks say.
    expect(counts()).toEqual({ assigns: 5, disagreements: 4 });
    const warnings = lines.filter((l) => l.level === "warn");
    expect(warnings.map((l) => l.msg)).toEqual([
      "metadata says the reserved IP is not on this droplet although the API assigned it here; re-assigning with backoff up to 60 s",
    ]);
    // The info log does not repeat per re-assign either.
    expect(lines.filter((l) => l.msg === "assigning the reserved IP to this droplet").length).toBe(1);
    keeper.close();
  });

  it("metadata lagging a few seconds is not a disagreement; an IP moved away later is re-assigned at once", async () => {
    let here = false;
    const { keeper, lines, counts } = keeperWith(() => here);
    keeper.start(1);
    await vi.advanceTimersByTimeAsync(1_000);
    expect(counts().assigns).toBe(1);
    here = true; // metadata catches up within the 5 s grace
    await vi.advanceTimersByTimeAsync(5_000);
    expect(counts()).toEqual({ assigns: 1, disagreements: 0 });
    here = false; // a human moved the IP: not a disagreement, re-assign on the next check
    await vi.advanceTimersByTimeAsync(300);
    expect(counts()).toEqual({ assigns: 2, disagreements: 0 });
    expect(lines.filter((l) => l.level === "warn")).toEqual([]);
    keeper.close();
  });
});
