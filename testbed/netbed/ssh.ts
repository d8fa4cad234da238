/**
 * SSH into the test bed's droplets, the way `@pulumi/command`'s remote.Command and CopyToRemote
 * reach real droplets: an sshd per droplet namespace (on its public address), a key pair made for
 * the run, the generated scripts run as the remote command with their stdin. Each droplet has its own
 * host key, and every connection pins it (a known_hosts file, strict checking, only the Ed25519
 * algorithm), as the stack's `hostKey` makes the provider do.
 *
 * The droplets share this host's filesystem, so each gets its own directories (ScriptOptions) and a
 * service manager made of shell snippets (no systemd in a namespace): a pidfile, SIGTERM, a bounded
 * wait, and `setsid` to start the agent outside the SSH session.
 */
import { agentNodeFlags } from "../harness/node-flags.js";
import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { ScriptOptions } from "../../components/scripts.js";
import { sh, shAsync, type NetBed } from "./bed.js";

export interface SshBed {
  scriptOptions(id: string): ScriptOptions;
  /** Run a remote command (a generated script) with stdin, as remote.Command does. */
  run(id: string, script: string, stdin?: string, timeoutMs?: number): Promise<{ code: number; out: string; err: string }>;
  /** Copy a local file to the droplet, as CopyToRemote does. */
  copy(id: string, local: string, remote: string): Promise<void>;
  agentPid(id: string): number | null;
  /** The droplet's host public key (authorized_keys form), as the stack's `hostKey`. */
  hostKey(id: string): string;
  /** Run a command on `id`, pinning the host key of `pinnedId` instead (to show a wrong key is refused). */
  runPinnedTo(id: string, pinnedId: string, script: string): Promise<{ code: number; out: string; err: string }>;
  close(): Promise<void>;
}

export async function startSsh(bed: NetBed): Promise<SshBed> {
  const dir = join(bed.dir, "ssh");
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const key = join(dir, "id_ed25519");
  sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-f", key]);
  writeFileSync(join(dir, "authorized_keys"), readFileSync(`${key}.pub`), { mode: 0o600 });
  // One host key per droplet; each connection gets a known_hosts file holding only the key it pins.
  const hostKeyFile = (id: string) => join(dir, `host_ed25519_${id}`);
  const hostKeys = new Map<string, string>();
  for (const n of bed.nodes.values()) {
    sh("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "", "-f", hostKeyFile(n.id)]);
    hostKeys.set(n.id, readFileSync(`${hostKeyFile(n.id)}.pub`, "utf8").trim());
  }
  const pin = (address: string, pinnedId: string) => {
    const file = join(dir, `known_hosts_${address}_${pinnedId}`);
    writeFileSync(file, `${address} ${hostKeys.get(pinnedId)}\n`, { mode: 0o600 });
    return file;
  };
  // sshd's privilege-separation directory; created only if missing, and then removed again.
  const madeRunSshd = !existsSync("/run/sshd");
  if (madeRunSshd) mkdirSync("/run/sshd", { mode: 0o755 });
  const sshdPids: number[] = [];
  for (const n of bed.nodes.values()) {
    const pidFile = join(n.dir, "sshd.pid");
    sh("ip", [
      "netns",
      "exec",
      n.ns,
      "/usr/sbin/sshd",
      "-f",
      "/dev/null",
      "-o",
      `ListenAddress=${n.publicIp}`,
      "-o",
      "Port=22",
      "-o",
      `HostKey=${hostKeyFile(n.id)}`,
      "-o",
      `AuthorizedKeysFile=${join(dir, "authorized_keys")}`,
      "-o",
      `PidFile=${pidFile}`,
      "-o",
      "PermitRootLogin=prohibit-password",
      "-o",
      "PasswordAuthentication=no",
      "-o",
      "StrictModes=no",
      "-o",
      "UsePAM=no",
      "-o",
      "Subsystem=sftp internal-sftp",
    ]);
    for (let i = 0; i < 50 && !existsSync(pidFile); i++) await new Promise((r) => setTimeout(r, 20));
    sshdPids.push(Number(readFileSync(pidFile, "utf8").trim()));
  }
  const sshArgs = (host: string, knownHostsFile: string) => [
    "-i",
    key,
    "-o",
    "BatchMode=yes",
    "-o",
    "StrictHostKeyChecking=yes",
    "-o",
    `UserKnownHostsFile=${knownHostsFile}`,
    "-o",
    "GlobalKnownHostsFile=/dev/null",
    "-o",
    "HostKeyAlgorithms=ssh-ed25519",
    "-o",
    "CheckHostIP=no",
    "-o",
    "LogLevel=ERROR",
    "-o",
    "ConnectTimeout=5",
    `root@${host}`,
  ];

  const opts = (id: string): ScriptOptions => {
    const d = bed.node(id).dir;
    const pid = join(d, "fipd.pid");
    const cfg = join(d, "etc", "fipd.yaml");
    const stop = `if p=$(cat "${pid}" 2>/dev/null) && kill -0 "$p" 2>/dev/null; then kill -TERM "$p"; i=0; while kill -0 "$p" 2>/dev/null && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done; kill -KILL "$p" 2>/dev/null || true; fi; rm -f "${pid}"`;
    const start = `FIPD_CONFIG="${cfg}" setsid "${process.execPath}" ${agentNodeFlags().join(" ")} "${join(d, "opt")}/fipd.cjs" run --config "${cfg}" >> "${join(d, "fipd.log")}" 2>&1 < /dev/null & echo $! > "${pid}"`;
    return {
      node: process.execPath,
      fipdDir: join(d, "opt"),
      fipd: join(d, "bin", "fipd"),
      etcDir: join(d, "etc"),
      owner: "root",
      service: {
        isActive: `{ p=$(cat "${pid}" 2>/dev/null) && kill -0 "$p" 2>/dev/null; }`,
        restart: `{ ${stop}; ${start}; }`,
        stop: `{ ${stop}; }`,
        install: `true`,
      },
    };
  };

  const agentPid = (id: string): number | null => {
    const f = join(bed.node(id).dir, "fipd.pid");
    if (!existsSync(f)) return null;
    const pid = Number(readFileSync(f, "utf8").trim());
    try {
      process.kill(pid, 0);
      return pid;
    } catch {
      return null;
    }
  };

  return {
    scriptOptions: opts,
    async run(id, script, stdin, timeoutMs = 180_000) {
      const n = bed.node(id);
      // The fipd CLI inside the scripts finds this droplet's config through FIPD_CONFIG.
      const remote = `export FIPD_CONFIG="${join(n.dir, "etc", "fipd.yaml")}"; mkdir -p "${join(n.dir, "opt")}" "${join(n.dir, "bin")}"\n${script}`;
      return shAsync("ssh", [...sshArgs(n.publicIp, pin(n.publicIp, id)), remote], stdin ?? "", timeoutMs);
    },
    async copy(id, local, remote) {
      const n = bed.node(id);
      const r = await shAsync(
        "ssh",
        [...sshArgs(n.publicIp, pin(n.publicIp, id)), `mkdir -p "$(dirname "${remote}")" && cat > "${remote}.part" && mv "${remote}.part" "${remote}"`],
        readFileSync(local, "utf8"),
      );
      if (r.code !== 0) throw new Error(`copy to ${id}:${remote} failed: ${r.err}`);
    },
    agentPid,
    hostKey: (id) => {
      const k = hostKeys.get(id);
      if (!k) throw new Error(`ssh bed: no droplet ${id}`);
      return k;
    },
    async runPinnedTo(id, pinnedId, script) {
      const n = bed.node(id);
      return shAsync("ssh", [...sshArgs(n.publicIp, pin(n.publicIp, pinnedId)), script], "", 30_000);
    },
    async close() {
      for (const n of bed.nodes.values()) {
        const pid = agentPid(n.id);
        if (pid) process.kill(pid, "SIGKILL");
      }
      for (const pid of sshdPids) {
        try {
          process.kill(pid, "SIGTERM");
        } catch {
          /* gone */
        }
      }
      if (madeRunSshd) {
        try {
          rmdirSync("/run/sshd");
        } catch {
          /* not empty or gone: leave it */
        }
      }
    },
  };
}
