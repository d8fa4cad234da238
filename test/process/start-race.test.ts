/**
 * apply-config racing an agent's start (real fipd): apply-config reloads a running agent through its
 * control socket, but one still starting has no socket yet and is told nothing, though it has read
 * the old files. fipd compares its files once its socket is up and reloads what changed meanwhile.
 *
 * The window is held open on purpose: the LB's metadata service answers 503 at first, so fipd waits
 * for its droplet ID after reading its config (agent/run.ts resolveDropletId, one try a second).
 */
import { existsSync, readFileSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { LocalCluster } from "../../testbed/harness/local-cluster.js";

let cluster: LocalCluster | null = null;
let gate: Server | null = null;
afterEach(async () => {
  await cluster?.close();
  cluster = null;
  await new Promise((r) => (gate ? gate.close(r) : r(undefined)));
  gate = null;
});

/** A metadata service that answers 503 until opened, then passes every request to `target`. */
async function metadataGate(target: string): Promise<{ url: string; open(): void }> {
  let opened = false;
  gate = createServer((req, res) => {
    if (!opened) return void res.writeHead(503).end("not yet");
    fetch(target + req.url).then(
      async (r) => res.writeHead(r.status, { "content-type": r.headers.get("content-type") ?? "text/plain" }).end(Buffer.from(await r.arrayBuffer())),
      () => res.writeHead(502).end(),
    );
  });
  await new Promise<void>((r) => gate!.listen(0, "127.0.0.1", r));
  return { url: `http://127.0.0.1:${(gate.address() as AddressInfo).port}`, open: () => (opened = true) };
}

describe("a config written while fipd starts", () => {
  it("is reloaded once the control socket is up: the agent does not keep the files it read before", async () => {
    cluster = await LocalCluster.start({ lbs: ["blue", "blue"], witness: true });
    const c = cluster;
    const h = c.node("lb-blue-2");
    const g = await metadataGate(h.config.metadata!.baseUrl!);
    h.config = { ...h.config, metadata: { ...h.config.metadata, baseUrl: g.url } };
    c.writeConfig(h);
    c.startAll();
    const log = join(c.dir, "lb-blue-2.log");
    const logText = () => (existsSync(log) ? readFileSync(log, "utf8") : "");
    await c.waitFor("lb-blue-2 to wait for its droplet ID", () => logText().includes("metadata service not answering yet"));
    // What apply-config does meanwhile: new files, and no agent to tell.
    expect(await c.status("lb-blue-2")).toBeNull();
    h.config = { ...h.config, maintenance: true };
    c.writeConfig(h);
    g.open();
    // Without the check, the agent answers on the config it read first: maintenance stays off.
    await c.waitFor("lb-blue-2 in maintenance, as its new config says", async () => (await c.status("lb-blue-2"))?.maintenance === true, 15_000);
    expect(logText()).toContain("the configuration files changed while fipd started; reloading them");
  }, 60_000);
});
