/**
 * The metadata-service guard, loaded for real by its loader in a network namespace that has the
 * metadata address on its loopback and an HTTP server behind it: root and the allowed users get
 * the answer, any other uid gets a reset. Needs root, ip, nft, setpriv and curl.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { METADATA_IPV4 } from "../../agent/ports.js";
import { METADATA_GUARD_SET, METADATA_GUARD_TABLE, metadataGuardLoader, metadataGuardRuleset } from "../../components/metadata-guard.js";

const NS = `halb-mdg-${process.pid}`;
const NOBODY = 65534;
const STRANGER = 54321;
/**
 * The droplet's own address, which its requests leave from (on a droplet the metadata service is
 * another host; here it shares the loopback, so the client binds another source address, or the
 * reset, addressed to the metadata address too, would meet the guard itself).
 */
const CLIENT_IPV4 = "203.0.113.250";
let dir = "";
let server: ChildProcess | undefined;

const run = (cmd: string, args: string[]) => {
  const r = spawnSync(cmd, args, { encoding: "utf8", timeout: 15_000 });
  if (r.error) throw r.error;
  return r;
};
const must = (cmd: string, args: string[]) => {
  const r = run(cmd, args);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(" ")}: exit ${r.status}: ${r.stderr}`);
  return r.stdout;
};
/** An HTTP request to the metadata address from inside the namespace, as `uid`. */
const fetchAs = (uid: number) =>
  run("ip", [
    "netns",
    "exec",
    NS,
    "setpriv",
    `--reuid=${uid}`,
    `--regid=${uid}`,
    "--clear-groups",
    "curl",
    "--interface",
    CLIENT_IPV4,
    "-sS",
    "--max-time",
    "3",
    `http://${METADATA_IPV4}/metadata/v1/user-data`,
  ]);

beforeAll(async () => {
  dir = mkdtempSync("/tmp/halb-mdg-");
  must("ip", ["netns", "add", NS]);
  must("ip", ["-n", NS, "link", "set", "lo", "up"]);
  must("ip", ["-n", NS, "addr", "add", `${METADATA_IPV4}/32`, "dev", "lo"]);
  must("ip", ["-n", NS, "addr", "add", `${CLIENT_IPV4}/32`, "dev", "lo"]);
  server = spawn(
    "ip",
    [
      "netns",
      "exec",
      NS,
      process.execPath,
      "-e",
      `require("http").createServer((q, s) => s.end("user-data")).listen(80, "${METADATA_IPV4}", () => console.log("ready"))`,
    ],
    { stdio: ["ignore", "pipe", "inherit"] },
  );
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error("the metadata stand-in did not start within 10 s")), 10_000);
    server!.stdout!.on("data", (d: Buffer) => d.toString().includes("ready") && (clearTimeout(t), resolve()));
  });
  // Before the guard: everyone gets the answer (what a droplet without the guard serves to any user).
  expect(fetchAs(STRANGER).stdout).toBe("user-data");
}, 30_000);

afterAll(() => {
  server?.kill("SIGKILL");
  run("ip", ["netns", "del", NS]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe("the metadata guard, loaded by its loader", () => {
  it("root and the allowed users that exist reach the metadata service; any other uid is reset", () => {
    const rules = join(dir, "metadata-guard.nft");
    const loader = join(dir, "load.sh");
    writeFileSync(rules, metadataGuardRuleset());
    // `nobody` stands in for fipd here (this machine has no fipd user); a missing user is skipped.
    writeFileSync(loader, metadataGuardLoader(["nobody", "halb-no-such-user"], rules), { mode: 0o700 });
    const loaded = run("ip", ["netns", "exec", NS, "sh", loader]);
    expect(loaded.stderr).toContain(`allowed to uid 0, ${NOBODY} only`);
    expect(loaded.status).toBe(0);
    expect(must("ip", ["netns", "exec", NS, "nft", "list", "set", "inet", METADATA_GUARD_TABLE, METADATA_GUARD_SET])).toMatch(
      new RegExp(`elements = \\{ 0, ${NOBODY} \\}`),
    );

    expect(fetchAs(0).stdout).toBe("user-data");
    expect(fetchAs(NOBODY).stdout).toBe("user-data");
    const denied = fetchAs(STRANGER);
    expect(denied.stdout).toBe("");
    expect(denied.status).not.toBe(0);
    expect(denied.stderr).toMatch(/reset|refused|Failed to connect/i);

    // Loading again (the unit at every boot) replaces the table: same result, no duplicate rules.
    expect(run("ip", ["netns", "exec", NS, "sh", loader]).status).toBe(0);
    expect(must("ip", ["netns", "exec", NS, "nft", "list", "table", "inet", METADATA_GUARD_TABLE]).match(/meta skuid @/g)).toHaveLength(1);
    expect(fetchAs(STRANGER).status).not.toBe(0);
    expect(fetchAs(NOBODY).stdout).toBe("user-data");
  });
});
