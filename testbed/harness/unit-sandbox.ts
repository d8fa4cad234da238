/**
 * Runs a command (the agent) under as much of fipd.service's sandbox as this machine can build
 * without systemd as PID 1: a private mount namespace (unshare) with the unit's file-system view,
 * the unit's user, capabilities and no_new_privs (setpriv), its limits (prlimit), and the seccomp
 * filters systemd derives from it (seccomp-exec.py, with libseccomp as systemd uses). Every setting
 * is read from the unit, so a change to the unit changes the sandbox the tests run the agent in.
 *
 * Each [Service] directive of the unit is either EMULATED here or listed in DROPLET_ONLY with the
 * reason; test/process/unit-sandbox.test.ts fails on a directive that is in neither, and the README
 * lists the droplet-only ones. Needs root (mounts, setpriv) and python3-seccomp.
 *
 * The command keeps its PID through every exec (no fork, no PID namespace), so a signal sent to the
 * spawned process reaches the agent itself, as systemd's KillSignal= does.
 */
import { execFileSync } from "node:child_process";
import { join, resolve } from "node:path";
import { readUnit, unitValue, unitValues, parseBytes, type UnitFile } from "./unit-file.js";

const SECCOMP_EXEC = resolve(__dirname, "seccomp-exec.py");
const PYTHON = "/usr/bin/python3";

/** How the sandbox builds each directive it emulates. */
export const EMULATED: Record<string, string> = {
  ExecStart: "the agent's Node.js flags (the command itself is the caller's)",
  User: "setpriv --reuid (a numeric stand-in for the fipd user)",
  Group: "setpriv --regid --clear-groups",
  NoNewPrivileges: "setpriv --no-new-privs",
  CapabilityBoundingSet: "setpriv --bounding-set=-all --inh-caps=-all (empty set only)",
  UMask: "umask before the exec",
  LimitNOFILE: "prlimit --nofile",
  MemoryMax: "approximated by prlimit --data (RLIMIT_DATA): V8 fails to allocate instead of the cgroup's OOM kill",
  ProtectSystem: "every mount re-bound read-only, except the read-write stand-ins (strict only)",
  ProtectHome: "an empty, inaccessible tmpfs over /home, /root and /run/user",
  PrivateTmp: "fresh tmpfs over /tmp and /var/tmp (the agent's own files under /tmp bound back in)",
  PrivateDevices: "a tmpfs /dev with null, zero, full, random, urandom and tty only",
  PrivateMounts: "the private mount namespace itself",
  ProtectKernelTunables: "/proc/sys hidden (ProcSubset=pid) and /sys read-only",
  ProtectKernelLogs: "no /dev/kmsg (PrivateDevices) and no /proc/kmsg (ProcSubset=pid)",
  ProtectControlGroups: "/sys/fs/cgroup read-only",
  ProtectProc: "proc mounted with hidepid=",
  ProcSubset: "proc mounted with subset=pid",
  RestrictAddressFamilies: "seccomp: socket() of another family fails with EAFNOSUPPORT",
  RestrictNamespaces: "seccomp: unshare, setns and namespace flags of clone fail; clone3 answers ENOSYS",
  RestrictRealtime: "seccomp: realtime scheduling policies fail",
  RestrictSUIDSGID: "seccomp: chmod of set-user/group-ID bits fails",
  LockPersonality: "seccomp: personality changes fail",
  SystemCallFilter: "seccomp allow-list from systemd-analyze syscall-filter's groups, in the unit's order",
  SystemCallErrorNumber: "seccomp: the allow-list's default action",
  SystemCallArchitectures: "seccomp: native only (libseccomp's default)",
  MemoryDenyWriteExecute: "=no: nothing to restrict",
  RuntimeDirectory: "a read-write directory the caller creates and owns for the agent",
  StateDirectory: "a read-write directory the caller creates and owns for the agent",
};

/** What only a droplet, with systemd as PID 1, exercises; and why. */
export const DROPLET_ONLY: Record<string, string> = {
  Type: "process supervision by systemd",
  ExecReload: "systemctl reload runs kill -HUP in the sandbox (the tests send SIGHUP directly)",
  KillSignal: "systemctl stop (the tests send SIGTERM directly)",
  TimeoutStopSec: "systemd's stop timeout",
  Restart: "systemd's restart logic (test/unit-file.test.ts models it)",
  RestartSec: "systemd's restart logic (modelled)",
  RestartSteps: "systemd's restart logic (modelled; systemd 254+)",
  RestartMaxDelaySec: "systemd's restart logic (modelled; systemd 254+)",
  OOMPolicy: "the cgroup OOM kill and systemd's reaction to it",
  RuntimeDirectoryMode: "directories systemd creates",
  StateDirectoryMode: "directories systemd creates",
  RemoveIPC: "clean-up by systemd when the user's last process ends",
  ProtectKernelModules: "hiding /usr/lib/modules (the module system calls are in @privileged, which the filter denies)",
  ProtectClock: "the rtc device rule (the clock system calls are in @privileged, which the filter denies)",
  ProtectHostname: "a UTS namespace (sethostname is in @privileged, which the filter denies)",
};

export interface SandboxOptions {
  /** The unit to read (default: components/assets/fipd.service). */
  unit?: UnitFile;
  /** Stand-ins for User= and Group=: this machine has no fipd user. */
  uid: number;
  gid: number;
  /** Files and directories the agent reads that PrivateTmp would hide (under /tmp): bound back read-only. */
  readOnly: string[];
  /** Stand-ins for RuntimeDirectory= and StateDirectory=: bound back read-write. */
  readWrite: string[];
  /** An empty directory the sandbox may mount on while it builds the private /tmp. */
  scratch: string;
}

const ADDRESS_FAMILIES: Record<string, number> = { AF_UNIX: 1, AF_LOCAL: 1, AF_INET: 2, AF_INET6: 10, AF_NETLINK: 16, AF_PACKET: 17 };
const ERRNO: Record<string, number> = { EPERM: 1, EACCES: 13, ENOSYS: 38 };

function yes(unit: UnitFile, key: string): boolean {
  const v = unitValue(unit, "Service", key);
  return v !== undefined && ["yes", "true", "on", "1"].includes(v);
}

/** systemd-analyze syscall-filter's groups: name → members (system calls and @groups). */
function syscallGroups(): Map<string, string[]> {
  const out = execFileSync("systemd-analyze", ["syscall-filter"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 30_000 });
  const groups = new Map<string, string[]>();
  let current: string[] | null = null;
  for (const line of out.split("\n")) {
    const t = line.trim();
    if (/^@[\w-]+$/.test(line)) {
      current = [];
      groups.set(line, current);
    } else if (current && t && !t.startsWith("#")) current.push(t);
  }
  if (!groups.get("@system-service")?.length) throw new Error("systemd-analyze syscall-filter printed no @system-service group");
  return groups;
}

function expand(entry: string, groups: Map<string, string[]>, seen = new Set<string>()): string[] {
  if (!entry.startsWith("@")) return [entry];
  const members = groups.get(entry);
  if (!members) throw new Error(`SystemCallFilter: unknown group ${entry}`);
  if (seen.has(entry)) return [];
  seen.add(entry);
  return members.flatMap((m) => expand(m, groups, seen));
}

/** SystemCallFilter= as systemd reads it: the first assignment sets the mode; later ~ lines remove. */
export function allowedSyscalls(unit: UnitFile, groups = syscallGroups()): string[] {
  const lines = unitValues(unit, "Service", "SystemCallFilter");
  if (!lines.length || lines[0].startsWith("~")) throw new Error("SystemCallFilter: the sandbox emulates an allow-list (the first assignment without ~)");
  const allowed = new Set<string>();
  for (const line of lines) {
    const deny = line.startsWith("~");
    for (const entry of line.replace(/^~/, "").split(/\s+/).filter(Boolean))
      for (const name of expand(entry, groups)) {
        if (deny) allowed.delete(name);
        else allowed.add(name);
      }
  }
  return [...allowed].sort();
}

function seccompSpec(unit: UnitFile): string {
  const errnoName = unitValue(unit, "Service", "SystemCallErrorNumber") ?? "";
  if (!(errnoName in ERRNO)) throw new Error(`SystemCallErrorNumber=${errnoName}: the sandbox knows ${Object.keys(ERRNO).join(", ")}`);
  const families = unitValues(unit, "Service", "RestrictAddressFamilies").flatMap((l) => l.split(/\s+/));
  if (families.some((f) => f.startsWith("~") || !(f in ADDRESS_FAMILIES)))
    throw new Error(`RestrictAddressFamilies=${families.join(" ")}: the sandbox emulates an allow-list of ${Object.keys(ADDRESS_FAMILIES).join(", ")}`);
  return JSON.stringify({
    errno: ERRNO[errnoName],
    allow: allowedSyscalls(unit),
    addressFamilies: families.length ? families.map((f) => ADDRESS_FAMILIES[f]) : null,
    restrictNamespaces: yes(unit, "RestrictNamespaces"),
    restrictRealtime: yes(unit, "RestrictRealtime"),
    restrictSUIDSGID: yes(unit, "RestrictSUIDSGID"),
    lockPersonality: yes(unit, "LockPersonality"),
  });
}

const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function mountScript(unit: UnitFile, o: SandboxOptions): string {
  const need = (key: string, value: string) => {
    const v = unitValue(unit, "Service", key);
    if (v !== value) throw new Error(`${key}=${v ?? ""}: the sandbox emulates ${key}=${value} only`);
  };
  need("ProtectSystem", "strict");
  // With ProtectSystem=strict, systemd leaves /sys writable unless these say otherwise; the loop below
  // makes every mount read-only, /sys included.
  need("ProtectKernelTunables", "yes");
  need("ProtectControlGroups", "yes");
  const hidepid = unitValue(unit, "Service", "ProtectProc") ?? "default";
  const subset = unitValue(unit, "Service", "ProcSubset") ?? "all";
  const privateTmp = yes(unit, "PrivateTmp");
  const staged = (p: string) => privateTmp && p.startsWith("/tmp/");
  const rw = o.readWrite.map((p) => resolve(p));
  const ro = o.readOnly.map((p) => resolve(p));
  const lines = ["set -eu"];
  // PrivateTmp: a fresh tmpfs, with the agent's own paths under /tmp bound into it, moved over /tmp.
  if (privateTmp) {
    lines.push(`mount -t tmpfs -o mode=1777,nosuid,nodev halb-tmp ${q(o.scratch)}`);
    for (const p of [...ro, ...rw].filter(staged)) {
      const inside = join(o.scratch, p.slice("/tmp/".length));
      lines.push(`if [ -d ${q(p)} ]; then mkdir -p ${q(inside)}; else mkdir -p "$(dirname ${q(inside)})"; touch ${q(inside)}; fi`);
      lines.push(`mount --bind ${q(p)} ${q(inside)}`);
    }
    lines.push(`mount --move ${q(o.scratch)} /tmp`, "mount -t tmpfs -o mode=1777,nosuid,nodev halb-vartmp /var/tmp");
  }
  // The other paths become mount points of their own: ProtectSystem skips the read-write ones below.
  for (const p of [...ro, ...rw].filter((p) => !staged(p))) lines.push(`mount --bind ${q(p)} ${q(p)}`);
  if (yes(unit, "ProtectHome")) lines.push(`for d in /home /root /run/user; do [ -d "$d" ] && mount -t tmpfs -o mode=000,ro halb-home "$d"; done; true`);
  if (yes(unit, "PrivateDevices"))
    lines.push(
      "mount -t tmpfs -o mode=755,nosuid,noexec halb-dev /dev",
      "mknod -m 666 /dev/null c 1 3; mknod -m 666 /dev/zero c 1 5; mknod -m 666 /dev/full c 1 7",
      "mknod -m 666 /dev/random c 1 8; mknod -m 666 /dev/urandom c 1 9; mknod -m 666 /dev/tty c 5 0",
      "ln -s /proc/self/fd /dev/fd; ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr",
      "mkdir /dev/shm; mount -t tmpfs -o mode=1777,nosuid,nodev halb-shm /dev/shm",
    );
  // ProtectProc= names the kernel's hidepid= values, but for "default".
  const procOptions = ["nosuid", "nodev", "noexec", `hidepid=${hidepid === "default" ? "off" : hidepid}`, ...(subset === "pid" ? ["subset=pid"] : [])];
  lines.push(`mount -t proc -o ${procOptions.join(",")} halb-proc /proc`);
  // ProtectSystem=strict (and ProtectKernelTunables, ProtectControlGroups for /sys): everything else read-only.
  const writable = ["/tmp", "/var/tmp", "/dev", "/dev/shm", "/proc", ...rw];
  lines.push(
    `writable=${q(writable.join("\n"))}`,
    `failed=""`,
    `for m in $(awk '{print $5}' /proc/self/mountinfo | sort -u); do`,
    `  m=$(printf '%b' "$m")`,
    `  if printf '%s\\n' "$writable" | grep -qxF "$m"; then continue; fi`,
    // Under the fresh /dev, /proc, /tmp and /var/tmp: hidden by them, or bound in and handled apart.
    `  case "$m" in /dev/*|/proc/*|/tmp/*|/var/tmp/*) continue;; esac`,
    `  mount -o remount,bind,ro "$m" 2>/dev/null || failed="$failed $m"`,
    `done`,
    `[ -z "$failed" ] || { echo "unit-sandbox: could not make read-only:$failed" >&2; exit 70; }`,
  );
  // The read-only paths bound back into /tmp (the loop skips /tmp's contents).
  for (const p of ro) lines.push(`mount -o remount,bind,ro ${q(p)}`);
  return lines.join("\n");
}

/** The argv that runs `argv` (an absolute command and its arguments) in the unit's sandbox. */
export function sandboxCommand(argv: string[], o: SandboxOptions): string[] {
  const unit = o.unit ?? readUnit();
  const known = new Set([...Object.keys(EMULATED), ...Object.keys(DROPLET_ONLY)]);
  const unknown = [...(unit.get("Service")?.keys() ?? [])].filter((k) => !known.has(k));
  if (unknown.length) throw new Error(`unit-sandbox: no emulation and no droplet-only reason for ${unknown.join(", ")} (testbed/harness/unit-sandbox.ts)`);
  if (unitValues(unit, "Service", "CapabilityBoundingSet").length) throw new Error("CapabilityBoundingSet: the sandbox emulates the empty set only");
  if (!yes(unit, "NoNewPrivileges")) throw new Error("NoNewPrivileges: the sandbox emulates yes only");
  const umask = unitValue(unit, "Service", "UMask") ?? "0022";
  const limits: string[] = [];
  const nofile = unitValue(unit, "Service", "LimitNOFILE");
  if (nofile) limits.push(`--nofile=${nofile}:${nofile}`);
  const memoryMax = unitValue(unit, "Service", "MemoryMax");
  if (memoryMax) limits.push(`--data=${parseBytes(memoryMax)}:${parseBytes(memoryMax)}`);
  const exec = [
    "setpriv",
    `--reuid=${o.uid}`,
    `--regid=${o.gid}`,
    "--clear-groups",
    "--no-new-privs",
    "--bounding-set=-all",
    "--inh-caps=-all",
    "--",
    "prlimit",
    ...limits,
    "--",
    PYTHON,
    SECCOMP_EXEC,
    seccompSpec(unit),
    "--",
    ...argv,
  ];
  const script = `${mountScript(unit, o)}\numask ${umask}\nexec "$@"`;
  return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", script, "unit-sandbox", ...exec];
}
