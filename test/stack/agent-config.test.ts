/**
 * What the stack sends each droplet, written by `fipd apply-config` and read back by the agent:
 * the agent reads exactly the config the stack meant (the schema's defaults filled in, the secret
 * files pointed at where apply-config put them).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { applyConfig } from "../../agent/apply-config.js";
import { parseAgentConfig } from "../../agent/config.js";
import { loadAgentConfigFile } from "../../agent/config-file.js";
import { BASE_CONFIG, runProgram, unwrap } from "./harness.js";

const dir = mkdtempSync(join(tmpdir(), "halb-stack-agent-config-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the agent config the stack writes", () => {
  it("is read back by the agent as the stack meant it, on every droplet (both colors and the witness)", async () => {
    const r = await runProgram(
      {
        ...BASE_CONFIG,
        "ha-lb:colors": JSON.stringify({ blue: { count: 2 }, green: { count: 1 } }),
        "ha-lb:metricsCidrs": JSON.stringify(["10.10.0.0/16"]),
        "ha-lb:failover": JSON.stringify({ leaseMs: 600, heartbeatIntervalMs: 100, preempt: true }),
      },
      "prod",
    );
    const stdins = r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config")).map((x) => unwrap(x.inputs.stdin) as string);
    expect(stdins).toHaveLength(4);
    for (const [i, stdin] of stdins.entries()) {
      const etc = join(dir, String(i));
      await applyConfig(stdin, { dir: etc, reload: false });
      const sent = (JSON.parse(stdin) as { config: Record<string, unknown> & { peerAuth: object } }).config;
      const meant = parseAgentConfig({ ...sent, peerAuth: { ...sent.peerAuth, keyFile: join(etc, "identity.key") }, api: { tokenFile: join(etc, "token") } });
      const read = loadAgentConfigFile(join(etc, "fipd.yaml"));
      expect(read).toEqual(meant);
      expect(read.failover).toMatchObject({ leaseMs: 600, heartbeatIntervalMs: 100, preempt: true });
    }
  }, 60_000);
});
