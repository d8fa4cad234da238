#!/usr/bin/env node
/**
 * Runs before the tests (`npm test`): the system tools the tests drive for real, and the Debian
 * packages that provide them. This list is their one home: `.ci/run` installs through this script too.
 *
 * - Everything present: prints nothing and exits 0.
 * - Something missing, as root: installs the packages with apt-get, saying so in one line.
 * - Something missing, not root: fails at once with the exact install command.
 * - Not root at all: fails at once, because the network-namespace tests (test/e2e) need root and a
 *   test that can run here must run, never be skipped.
 */
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";

/** binary (name on PATH, an absolute path, or python3:MODULE for a module of /usr/bin/python3) → the Debian package that provides it. */
export const SYSTEM_TOOLS = [
  ["haproxy", "haproxy"],
  ["keepalived", "keepalived"],
  ["nft", "nftables"],
  ["ip", "iproute2"],
  ["/usr/sbin/sshd", "openssh-server"],
  ["ssh", "openssh-client"],
  ["ssh-keygen", "openssh-client"],
  ["curl", "curl"],
  ["openssl", "openssl"],
  // test/unit-file.test.ts: systemd's own analysis of the agent's unit (security, verify).
  ["systemd-analyze", "systemd"],
  // test/process/unit-sandbox.test.ts: the unit's seccomp filters, built with libseccomp as systemd does.
  ["python3:seccomp", "python3-seccomp"],
  // The web demo's browser test (test/demo) drives Debian's chromium; playwright-core never downloads one.
  ["/usr/bin/chromium", "chromium"],
  // The ACME tests (test/acme, test/e2e): Let's Encrypt's test CA and its DNS server.
  ["pebble", "pebble"],
  ["pebble-challtestsrv", "pebble"],
];

const has = (bin) => {
  if (bin.startsWith("python3:")) return spawnSync("/usr/bin/python3", ["-c", `import ${bin.slice("python3:".length)}`], { stdio: "ignore" }).status === 0;
  return bin.startsWith("/") ? existsSync(bin) : spawnSync("sh", ["-c", `command -v ${bin}`], { stdio: "ignore" }).status === 0;
};

export function missingPackages() {
  return [...new Set(SYSTEM_TOOLS.filter(([bin]) => !has(bin)).map(([, pkg]) => pkg))];
}

function main() {
  const missing = missingPackages();
  const root = process.getuid?.() === 0;
  const command = `apt-get update && apt-get install -y ${missing.join(" ")}`;
  if (!root) {
    const why = missing.length ? `these tools are missing: install them with\n  sudo sh -c '${command}'\nthen` : "";
    console.error(
      `npm test: the end-to-end tests run HAProxy and fipd in Linux network namespaces, which needs root. ${why} run the tests as root (sudo npm test).`,
    );
    process.exit(1);
  }
  if (missing.length === 0) return;
  console.log(`npm test: installing the Debian packages the tests need: ${missing.join(" ")}`);
  try {
    const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
    execFileSync("apt-get", ["update", "-qq"], { stdio: ["ignore", "ignore", "inherit"], env, timeout: 600_000 });
    execFileSync("apt-get", ["install", "-y", "-qq", ...missing], { stdio: ["ignore", "ignore", "inherit"], env, timeout: 1_200_000 });
  } catch (e) {
    console.error(`npm test: the install failed (${e.message.split("\n")[0]}). Run it by hand: ${command}`);
    process.exit(1);
  }
  const still = missingPackages();
  if (still.length) {
    console.error(`npm test: still missing after the install: ${still.join(" ")}`);
    process.exit(1);
  }
}

if (import.meta.url === `file://${process.argv[1]}`) main();
