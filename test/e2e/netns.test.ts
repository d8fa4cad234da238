/**
 * End to end in network namespaces (see testbed/netbed/bed.ts): two blue and two green droplets with
 * real HAProxy (the stack's rendered config, installed by the stack's script with the anchor address
 * from the metadata service), a witness, real fipd processes, the DigitalOcean emulator, a router
 * doing the Reserved IP's 1:1 NAT, and a client that opens a new connection every 50 ms.
 *
 * Needs root, ip, nft and haproxy: CI has them (.ci/run installs them). The tests share one bed and
 * each puts the cluster back as it found it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { switchColorCheckScript } from "../../components/scripts.js";
import { NetBed, RESERVED_IP, downtime, shAsync, type ProbeResult } from "../../testbed/netbed/bed.js";

let bed: NetBed;
const LBS = ["lb-blue-1", "lb-blue-2", "lb-green-1", "lb-green-2"];
const colorOf = (id: string | null | undefined) => (id ?? "").replace(/^lb-(blue|green)-\d+$/, "$1");

beforeAll(async () => {
  bed = await NetBed.start({ lbs: ["blue", "blue", "green", "green"], witness: true });
  for (const id of LBS) await bed.installHaproxy(id);
  for (const id of bed.nodes.keys()) await bed.startAgent(id);
  await bed.waitForStableLeader();
}, 120_000);

afterAll(async () => {
  await bed?.close();
}, 60_000);

/** Back to: every HAProxy and agent running, blue in force, a blue leader holding the IP. */
async function restore(): Promise<string> {
  for (const id of LBS) if (!bed.haproxyPid(id)) await bed.installHaproxy(id);
  for (const id of bed.nodes.keys()) if (!bed.node(id).agent) await bed.startAgent(id);
  return bed.waitFor(
    "a blue leader holding the IP, seen through the Reserved IP",
    async () => {
      const l = await bed.leader();
      if (!l || colorOf(l) !== "blue" || bed.holder() !== l) return null;
      return (await bed.curl(RESERVED_IP)) === l ? l : null;
    },
    30_000,
  );
}

/** Run `during` with the client probing, then wait until `settled` and a little more. */
async function withClient(during: () => Promise<void>, settled: () => Promise<boolean>): Promise<ProbeResult[]> {
  const client = bed.startClient(50, 1_000);
  await bed.waitFor("the client's first answers", () => client.results.filter((r) => r.ok).length >= 5, 10_000);
  await during();
  await bed.waitFor("the cluster to settle", settled, 30_000, 50);
  await new Promise((r) => setTimeout(r, 1_000));
  return client.stop();
}

const servedBy = (rs: ProbeResult[]) => [...new Set(rs.filter((r) => r.ok).map((r) => r.servedBy))];
const tail = (rs: ProbeResult[], n = 10) => rs.slice(-n);

describe("ha-lb in network namespaces", () => {
  it("HAProxy answers through the Reserved IP and on each anchor address, never on a public address", async () => {
    const leader = await restore();
    expect(await bed.curl(RESERVED_IP)).toBe(leader);
    for (const id of LBS) {
      const n = bed.node(id);
      expect(await bed.curl(n.anchorIp!)).toBe(id);
      expect(await bed.curl(n.publicIp)).toBeNull();
    }
  });

  it("kill -9 of the holder's droplet (agent and HAProxy): the client gets answers again, from another droplet", async () => {
    const victim = await restore();
    const assignsBefore = bed.emulator.requestLog().filter((r) => r.method === "POST").length;
    const rs = await withClient(
      async () => {
        await bed.stopAgent(victim, "SIGKILL");
        await bed.stopHaproxy(victim);
      },
      async () => {
        const h = bed.holder();
        return h !== null && h !== victim && (await bed.leader()) === h;
      },
    );
    const d = downtime(rs, 50);
    expect(d.failed).toBeGreaterThan(0); // the droplet died with the IP on it
    expect(tail(rs).every((r) => r.ok)).toBe(true);
    expect(tail(rs)[0].servedBy).not.toBe(victim);
    expect(colorOf(tail(rs)[0].servedBy)).toBe("blue"); // blue is in force: blue replaces blue
    expect(bed.emulator.requestLog().filter((r) => r.method === "POST").length - assignsBefore).toBe(1);
  });

  it("HAProxy stopped on the leader: the agent hands over and another droplet serves", async () => {
    const victim = await restore();
    const rs = await withClient(
      async () => await bed.stopHaproxy(victim),
      async () => {
        const h = bed.holder();
        return h !== null && h !== victim && (await bed.leader()) === h;
      },
    );
    expect(tail(rs).every((r) => r.ok)).toBe(true);
    expect(tail(rs)[0].servedBy).not.toBe(victim);
    const st = await bed.status(victim);
    expect(st?.role).toBe("follower");
  });

  it("graceful stop (SIGTERM) of the leader: zero failed requests", async () => {
    const victim = await restore();
    let code: number | null = -1;
    const rs = await withClient(
      async () => {
        code = await bed.stopAgent(victim, "SIGTERM");
      },
      async () => {
        const h = bed.holder();
        return h !== null && h !== victim && (await bed.leader()) === h;
      },
    );
    expect(code).toBe(0);
    expect(downtime(rs, 50)).toMatchObject({ failed: 0 });
    expect(servedBy(rs)).toContain(victim);
    expect(tail(rs)[0].servedBy).not.toBe(victim);
  });

  it("blue → green by config reload: zero failed requests; and back", async () => {
    await restore();
    const switchTo = async (color: "blue" | "green") => {
      bed.activeColor = color;
      for (const id of bed.nodes.keys()) await bed.applyConfig(id); // reloads each running agent
    };
    const toGreen = await withClient(
      () => switchTo("green"),
      async () => {
        const l = await bed.leader();
        return colorOf(l) === "green" && bed.holder() === l;
      },
    );
    expect(downtime(toGreen, 50)).toMatchObject({ failed: 0 });
    expect(colorOf(tail(toGreen)[0].servedBy)).toBe("green");
    const leader = (await bed.leader())!;
    const st = (await bed.status(leader))!;
    expect(st).toMatchObject({ colorInForce: "green", requestedColor: "green", pendingSwitch: null });

    const toBlue = await withClient(
      () => switchTo("blue"),
      async () => {
        const l = await bed.leader();
        return colorOf(l) === "blue" && bed.holder() === l;
      },
    );
    expect(downtime(toBlue, 50)).toMatchObject({ failed: 0 });
    expect(colorOf(tail(toBlue)[0].servedBy)).toBe("blue");
  });

  it("a switch to an unhealthy green is refused: traffic stays on blue, status says why, the deploy check fails", async () => {
    const blueLeader = await restore();
    await bed.stopHaproxy("lb-green-1");
    await bed.stopHaproxy("lb-green-2");
    await bed.waitFor(
      "both greens to report unhealthy",
      async () => {
        const s = await Promise.all(["lb-green-1", "lb-green-2"].map((id) => bed.status(id)));
        return s.every((x) => x && x.healthy === false);
      },
      15_000,
    );
    const client = bed.startClient(50, 1_000);
    bed.activeColor = "green";
    for (const id of bed.nodes.keys()) await bed.applyConfig(id);
    const st = await bed.waitFor(
      "the switch to be reported pending",
      async () => {
        const s = await bed.status(blueLeader);
        return s?.requestedColor === "green" && s.pendingSwitch ? s : null;
      },
      10_000,
    );
    expect(st.colorInForce).toBe("blue");
    expect(st.pendingSwitch).toMatch(/green/);
    // What `pulumi up` runs after a config change: it must fail, with the agents' reason.
    const n = bed.node(blueLeader);
    const wrapper = `${n.dir}/fipd-cli`;
    await shAsync("sh", [
      "-c",
      `printf '#!/bin/sh\\nexec "%s" "%s" "$@" --config "%s"\\n' "${process.execPath}" "${require.resolve("../../dist/fipd.cjs")}" "${n.dir}/etc/fipd.yaml" > ${wrapper} && chmod 755 ${wrapper}`,
    ]);
    const check = await shAsync("ip", ["netns", "exec", n.ns, "sh", "-c", switchColorCheckScript("green", 3, { fipd: wrapper, node: process.execPath })]);
    expect(check.code).not.toBe(0);
    expect(check.err).toMatch(/switch to green not done within 3 s: requested green, in force blue, pending: .*green/);
    await new Promise((r) => setTimeout(r, 1_000));
    const rs = await client.stop();
    expect(downtime(rs, 50)).toMatchObject({ failed: 0 });
    expect(servedBy(rs)).toEqual([blueLeader]);
    expect(bed.holder()).toBe(blueLeader);

    bed.activeColor = "blue";
    for (const id of bed.nodes.keys()) await bed.applyConfig(id);
    await restore();
  });
});
