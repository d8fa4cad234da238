/**
 * Real fipd processes (3 blue LBs + witness on loopback) against the DigitalOcean emulator.
 * These run one file at a time (vitest project "serial") so a busy machine does not skew them.
 */
import { afterEach, describe, expect, it } from "vitest";
import { LocalCluster } from "../../testbed/harness/local-cluster.js";

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

async function startCluster(actionDelayMs = 200): Promise<LocalCluster> {
  cluster = await LocalCluster.start({ lbs: ["blue", "blue", "blue"], witness: true, actionDelayMs });
  cluster.startAll();
  const c = cluster;
  await c.waitFor("a leader holding the reserved IP", async () => {
    const l = await c.leader();
    return l && c.holder() === l ? l : null;
  });
  return c;
}

const assigns = (c: LocalCluster) => c.emulator.requestLog().filter((r) => r.method === "POST" && r.path.endsWith("/actions")).length;

describe("fipd processes against the emulator", () => {
  it("elects one leader, which assigns the IP to its own droplet exactly once", async () => {
    const c = await startCluster();
    const leader = (await c.leader())!;
    expect(c.holder()).toBe(leader);
    expect(assigns(c)).toBe(1);
    // The leader learns the assign completed from the action poll or its next metadata check.
    const st = await c.waitFor(
      "the leader to see the IP on its droplet",
      async () => {
        const s = await c.status(leader);
        return s?.reservedIp?.holderIsLeader ? s : null;
      },
      5_000,
    );
    expect(st.role).toBe("leader");
    expect(assigns(c)).toBe(1);
    // Followers learn who holds the IP from the leader's heartbeats.
    const follower = [...c.nodes.keys()].find((id) => id !== leader && id !== "witness")!;
    await c.waitFor("follower sees the holder", async () => (await c.status(follower))?.reservedIp?.holder === leader);
  });

  it("kill -9 of the leader: another node takes over and assigns the IP once, within 10 API requests", async () => {
    const c = await startCluster();
    const victim = (await c.leader())!;
    const before = c.emulator.requestLog().length;
    const assignsBefore = assigns(c);
    await c.stopNode(victim, "SIGKILL");
    const successor = await c.waitFor("a new leader holding the IP", async () => {
      const l = await c.leader();
      return l && l !== victim && c.holder() === l ? l : null;
    });
    expect(successor).not.toBe("witness");
    expect(assigns(c) - assignsBefore).toBe(1);
    // Let the new leader settle (confirmations) and count every request the failover cost.
    await new Promise((r) => setTimeout(r, 500));
    expect(c.emulator.requestLog().length - before).toBeLessThanOrEqual(10);
  });

  it("a minority left alone never assigns the IP", async () => {
    const c = await startCluster();
    const leader = (await c.leader())!;
    const lbs = [...c.nodes.keys()].filter((id) => id !== "witness");
    const follower = lbs.find((id) => id !== leader)!;
    const survivor = lbs.find((id) => id !== leader && id !== follower)!;
    // Freeze the leader and one follower: the survivor and the witness are 2 of 4 voters.
    c.node(leader).proc!.kill("SIGSTOP");
    c.node(follower).proc!.kill("SIGSTOP");
    const assignsBefore = assigns(c);
    try {
      await new Promise((r) => setTimeout(r, 2_500));
      expect(assigns(c)).toBe(assignsBefore);
      expect(c.holder()).toBe(leader);
      const st = (await c.status(survivor))!;
      expect(st.role).not.toBe("leader");
      expect(st.majorityReachable).toBe(false);
    } finally {
      c.node(leader).proc?.kill("SIGCONT");
      c.node(follower).proc?.kill("SIGCONT");
    }
    // Once the majority is back, there is exactly one leader and it holds the IP.
    await c.waitFor("a leader holding the IP after the heal", async () => {
      const l = await c.leader();
      return l && c.holder() === l ? l : null;
    });
  });

  it("operator handover and maintenance move the IP without an outage of leadership", async () => {
    const c = await startCluster();
    const first = (await c.leader())!;
    const target = [...c.nodes.keys()].find((id) => id !== first && id !== "witness")!;
    await c.request(first, { cmd: "handover", to: target });
    await c.waitFor(`the IP on ${target}`, async () => ((await c.leader()) === target && c.holder() === target ? true : null));
    await c.request(target, { cmd: "maintenance", on: true });
    const third = await c.waitFor("the IP off the node in maintenance", async () => {
      const l = await c.leader();
      return l && l !== target && c.holder() === l ? l : null;
    });
    expect(third).not.toBe(target);
    const st = (await c.status(target))!;
    expect(st.maintenance).toBe(true);
    expect(st.role).not.toBe("leader");
  });

  it("SIGTERM on the leader hands the IP over before the process exits", async () => {
    const c = await startCluster();
    const leader = (await c.leader())!;
    const code = await c.stopNode(leader, "SIGTERM");
    expect(code).toBe(0);
    // By the time the old leader has exited, the IP is already on another droplet.
    expect(c.holder()).not.toBe(leader);
    expect(c.holder()).not.toBeNull();
  });

  it("unhealthy HAProxy on the leader moves the IP to a healthy node", async () => {
    const c = await startCluster();
    const leader = (await c.leader())!;
    c.node(leader).health!.setHealthy(false);
    const successor = await c.waitFor("a healthy leader holding the IP", async () => {
      const l = await c.leader();
      return l && l !== leader && c.holder() === l ? l : null;
    });
    expect(successor).not.toBe("witness");
  });
});
