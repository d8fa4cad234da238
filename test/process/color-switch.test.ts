/** Blue-green by config reload, with real processes: a switch happens only to a healthy color. */
import { afterEach, describe, expect, it } from "vitest";
import { LocalCluster } from "../../testbed/harness/local-cluster.js";

let cluster: LocalCluster | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
});

async function switchTo(c: LocalCluster, color: "blue" | "green") {
  for (const h of c.nodes.values()) {
    h.config = { ...h.config, activeColor: color };
    c.writeConfig(h);
    h.proc!.kill("SIGHUP");
  }
}

describe("blue-green switch by config reload", () => {
  it("moves the IP to green when green is healthy, and refuses an unhealthy green", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue", "green", "green"], witness: true });
    const c = cluster;
    c.startAll();
    const blue = await c.waitFor("a blue leader holding the IP", async () => {
      const l = await c.leader();
      return l && l.startsWith("lb-blue") && c.holder() === l ? l : null;
    });

    // Green is down: the switch is refused, traffic stays on blue, status says why.
    c.node("lb-green-1").health!.setHealthy(false);
    c.node("lb-green-2").health!.setHealthy(false);
    await new Promise((r) => setTimeout(r, 600));
    await switchTo(c, "green");
    const pending = await c.waitFor("the switch reported pending", async () => {
      const st = await c.status(blue);
      return st?.pendingSwitch ? st : null;
    });
    expect(pending.colorInForce).toBe("blue");
    expect(pending.requestedColor).toBe("green");
    expect(pending.pendingSwitch).toMatch(/green/);
    await new Promise((r) => setTimeout(r, 800));
    expect(c.holder()).toBe(blue);

    // Green recovers: the pending switch completes by a planned handover.
    c.node("lb-green-1").health!.setHealthy(true);
    c.node("lb-green-2").health!.setHealthy(true);
    const green = await c.waitFor("a green leader holding the IP", async () => {
      const l = await c.leader();
      return l && l.startsWith("lb-green") && c.holder() === l ? l : null;
    });
    const st = (await c.status(green))!;
    expect(st.colorInForce).toBe("green");
    expect(st.pendingSwitch).toBeNull();
  });
});
