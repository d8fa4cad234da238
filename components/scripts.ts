/**
 * The shell commands `pulumi up` runs on each droplet over SSH (via @pulumi/command). Pure functions
 * of plain values, so the network-namespace tests run exactly these scripts (with `ScriptOptions`
 * pointing at their own paths and service manager). Secrets never appear here: they travel on the
 * command's stdin (see applyConfigCommand) and land in 0600 files in a root-owned directory.
 *
 * The order Pulumi runs them in, per droplet:
 *   create:   waitForBootstrapScript → (CopyToRemote bundle + unit) → haproxyInstallScript (stdin: config)
 *             → applyConfigCommand (stdin: secret JSON) → rollingRestartScript (one droplet at a time)
 *             → leaderRestartScript (a no-op on a first deploy) → switchColorCheckScript once
 *   config change (activeColor, backends, peers):  haproxyInstallScript / applyConfigCommand again
 *             (reload; a restart only for the keys a reload cannot apply), then switchColorCheckScript once
 *   bundle change:  applyConfigCommand, then rollingRestartScript droplet by droplet (the leader
 *             waits), then leaderRestartScript droplet by droplet (restarts the leader, after a handover)
 *   delete:   deleteScript (hand over, leave eligibility, stop) before the droplet is deleted
 */
import { buildId } from "../agent/build-id.js";

export const FIPD_DIR = "/opt/fipd";
export const UNIT_PATH = "/etc/systemd/system/fipd.service";
export const bundlePath = (sha256: string, fipdDir = FIPD_DIR) => `${fipdDir}/fipd-${buildId(sha256)}.cjs`;
/**
 * The ACME child (agent/build.ts buildAcmeBundle): fipd runs it from beside the bundle the fipd.cjs
 * symlink points to (agent/acme/runtime.ts acmeChildPath), so it lives in the same directory. One
 * file, not one per build: fipd starts it only for an order, and reads it whole at that start.
 */
export const acmeChildPath = (fipdDir = FIPD_DIR) => `${fipdDir}/fipd-acme.cjs`;

export interface ScriptOptions {
  /** Node.js binary (the bootstrap installs the pinned LTS there). */
  node?: string;
  /** Where bundles live; fipd.cjs there is a symlink to the active one. */
  fipdDir?: string;
  /** The `fipd` command (a wrapper the install script writes). */
  fipd?: string;
  /** Config and secrets directory. */
  etcDir?: string;
  /** The user that owns the config and secret files (the unit's User=). */
  owner?: string;
  /** Service control, as shell snippets. Default: systemd. The namespace tests use their own. */
  service?: { isActive: string; restart: string; stop: string; install: string };
}

const SYSTEMD = {
  isActive: "systemctl is-active --quiet fipd",
  restart: "systemctl restart fipd",
  stop: "systemctl stop fipd",
  install: "systemctl daemon-reload && systemctl enable fipd >/dev/null 2>&1",
};

function opts(o: ScriptOptions = {}) {
  return {
    node: o.node ?? "/usr/bin/node",
    fipdDir: o.fipdDir ?? FIPD_DIR,
    fipd: o.fipd ?? "/usr/local/bin/fipd",
    etcDir: o.etcDir ?? "/etc/fipd",
    owner: o.owner ?? "fipd",
    service: o.service ?? SYSTEMD,
  };
}

/**
 * Shell helpers: read one field of `fipd status --json` with node (no jq on the droplet). Prints
 * nothing when the agent does not answer.
 */
const statusField = (o: ReturnType<typeof opts>) => `status_field() {
  "${o.fipd}" status --json 2>/dev/null | "${o.node}" -e '
    let s = ""; process.stdin.on("data", (d) => (s += d)).on("end", () => {
      try { const v = process.argv[1].split(".").reduce((a, k) => (a == null ? a : a[k]), JSON.parse(s)); process.stdout.write(v == null ? "" : String(v)); } catch {}
    });' "$1"
}`;

/** Wait for cloud-init's bootstrap (userData) to finish: a fresh droplet answers SSH before it has. */
export const waitForBootstrapScript = (timeoutS = 600) => `set -eu
i=0
while [ ! -f /var/lib/ha-lb-bootstrapped ]; do
  i=$((i + 2))
  if [ "$i" -gt ${timeoutS} ]; then
    echo "ha-lb: bootstrap (cloud-init) did not finish within ${timeoutS} s; see /var/log/cloud-init-output.log" >&2
    exit 1
  fi
  sleep 2
done
`;

/**
 * Make a copied bundle the active one (symlink), write the `fipd` wrapper, install the unit. Does not
 * (re)start anything: rollingRestartScript does that, one droplet at a time.
 */
export function installAgentScript(sha256: string, so?: ScriptOptions): string {
  const o = opts(so);
  return `set -eu
test -s "${bundlePath(sha256, o.fipdDir)}" || { echo "ha-lb: bundle ${bundlePath(sha256, o.fipdDir)} is missing" >&2; exit 1; }
ln -sfn "${bundlePath(sha256, o.fipdDir)}" "${o.fipdDir}/fipd.cjs"
cat > "${o.fipd}.tmp" <<'WRAP'
#!/bin/sh
exec "${o.node}" "${o.fipdDir}/fipd.cjs" "$@"
WRAP
chmod 755 "${o.fipd}.tmp"
mv "${o.fipd}.tmp" "${o.fipd}"
${o.service.install}
`;
}

/**
 * Write config and secrets (the JSON document on stdin) with the bundle's own validator, then reload
 * a running agent (SIGHUP semantics: the IP is not dropped). Every config change goes this way, e.g.
 * activeColor, a token rotation or new peers. Runs the given bundle directly, so it works before the
 * agent is installed and validates with the schema of the bundle about to run.
 *
 * First the config directory becomes root's (0755 root:root): root writes the secrets there, so the
 * service user must not be able to plant links or swap names in it, and apply-config refuses any
 * other directory. Droplets bootstrapped before this have it owned by the service user (cloud-init
 * made it so, and changing userData would replace every droplet): fixed here, on every run
 * (idempotent). The files inside are apply-config's: secrets 0600 owned by the service user (the
 * agent refuses them readable by others), the config 0640 root:<its group>.
 *
 * A reload applies most keys; those it cannot (listen, api, metadata, paths: agent/reload-keys.ts)
 * the agent lists as `restartPending`, and then the agent is restarted here (a leader hands over
 * first) and the step waits for a healthy cluster, as a rolling restart does.
 */
export function applyConfigCommand(sha256: string, so?: ScriptOptions, timeoutS = 120): string {
  const o = opts(so);
  return `set -eu
if [ -L "${o.etcDir}" ]; then
  echo "ha-lb: ${o.etcDir} is a symbolic link; refusing to write config and secrets through it (check who made it, remove it, and deploy again)" >&2
  exit 1
fi
mkdir -p "${o.etcDir}"
chown root:root "${o.etcDir}"
chmod 0755 "${o.etcDir}"
"${o.node}" "${bundlePath(sha256, o.fipdDir)}" apply-config --dir "${o.etcDir}" --owner ${o.owner}
${statusField(o)}
pending=$(status_field restartPending)
if [ -n "$pending" ] && ${o.service.isActive}; then
  echo "ha-lb: the running agent needs a restart for: $pending"
  if [ "$(status_field role)" = "leader" ]; then
    "${o.fipd}" handover || echo "ha-lb: handover refused (no other eligible node?); SIGTERM will try again" >&2
  fi
  ${o.service.restart}
  "${o.fipd}" status --wait-healthy --timeout ${timeoutS}
fi
`;
}

/**
 * Activate a bundle and restart the agent, one droplet at a time (first pass):
 * - first start on this droplet (agent not running): start it and return; the cluster may not have a
 *   majority yet, the final switchColorCheckScript waits for the whole cluster;
 * - the leader is not restarted now: leaderRestartScript restarts it in the second pass, once every
 *   other droplet runs the new bundle, so it hands over once, to a droplet that will not restart
 *   again in this roll (the IP moves once per upgrade, whoever leads);
 * - otherwise: restart, then wait until a leader of the color in force holds the IP with a majority
 *   connected, or fail the deploy after timeoutS.
 */
export function rollingRestartScript(sha256: string, timeoutS = 120, so?: ScriptOptions): string {
  const o = opts(so);
  return `set -eu
${statusField(o)}
${installAgentScript(sha256, so).replace(/^set -eu\n/, "")}"${o.fipd}" check-config "${o.etcDir}/fipd.yaml"
if ! ${o.service.isActive}; then
  ${o.service.restart}
  echo "ha-lb: fipd started (first start on this droplet)"
  exit 0
fi
if [ "$(status_field role)" = "leader" ]; then
  echo "ha-lb: this node leads: its restart waits for the second pass, when the other droplets run build ${buildId(sha256)}"
  exit 0
fi
${o.service.restart}
"${o.fipd}" status --wait-healthy --timeout ${timeoutS}
`;
}

/**
 * The second pass of a bundle roll, after every droplet's first pass: restart an agent still running
 * another build (the leader deferred by rollingRestartScript, or an agent that could not say which
 * build it runs). A leader hands over first, preferring a droplet already on the new build; then
 * restart and wait as in the first pass. A no-op where the agent already runs this build.
 */
export function leaderRestartScript(sha256: string, timeoutS = 120, so?: ScriptOptions): string {
  const o = opts(so);
  const build = buildId(sha256);
  return `set -eu
${statusField(o)}
if ! ${o.service.isActive}; then
  echo "ha-lb: fipd is not running on this droplet; nothing to finish"
  exit 0
fi
if [ "$(status_field build)" = "${build}" ]; then
  echo "ha-lb: fipd already runs build ${build}"
  exit 0
fi
if [ "$(status_field role)" = "leader" ]; then
  echo "ha-lb: this node leads; handing over to a droplet running build ${build} before the restart"
  "${o.fipd}" handover --prefer-build ${build} || echo "ha-lb: handover refused (no other eligible node?); SIGTERM will try again" >&2
fi
${o.service.restart}
"${o.fipd}" status --wait-healthy --timeout ${timeoutS}
`;
}

/**
 * How long the final check waits, once the color is in force, for the agent it asks to retire the
 * previous peer key after a roll. Every member has the new key by then, and each signs with it at
 * the next heartbeat (50 ms by default); a member that is down keeps it waiting, and the check then
 * prints who, without failing the deploy.
 */
export const KEY_RETIREMENT_WAIT_S = 15;

/**
 * Once per `pulumi up`, after every droplet got its config: wait until the requested color is in
 * force, led, holding the IP, with no switch pending. A switch to a color with no healthy node keeps
 * the old color in force (the agents refuse it), and this fails with the agents' reason so that
 * `pulumi up` reports it. Then it prints the peer key line of `fipd status` (after a key roll: when
 * the previous key was retired, or which members it still waits for; agent/key-retirement.ts).
 */
export function switchColorCheckScript(color: "blue" | "green", timeoutS = 120, so?: ScriptOptions, keyWaitS = KEY_RETIREMENT_WAIT_S): string {
  const o = opts(so);
  return `set -u
${statusField(o)}
deadline=$(( $(date +%s) + ${timeoutS} ))
while :; do
  requested=$(status_field requestedColor)
  inforce=$(status_field colorInForce)
  pending=$(status_field pendingSwitch)
  if [ "$requested" = "${color}" ] && [ "$inforce" = "${color}" ] && [ -z "$pending" ]; then
    if "${o.fipd}" status --wait-healthy --timeout 5 >/dev/null 2>&1; then
      echo "ha-lb: ${color} is in force and holds the Reserved IP"
      i=0
      while [ -n "$(status_field peerKeys.previous)" ] && [ "$i" -lt ${keyWaitS} ]; do
        sleep 1
        i=$((i + 1))
      done
      "${o.fipd}" status 2>/dev/null | grep '^previous peer key ' | sed 's/^/ha-lb: /' || true
      exit 0
    fi
  fi
  if [ "$(date +%s)" -ge "$deadline" ]; then
    echo "ha-lb: switch to ${color} not done within ${timeoutS} s: requested \${requested:-?}, in force \${inforce:-?}\${pending:+, pending: $pending}" >&2
    "${o.fipd}" status >&2 || true
    exit 1
  fi
  sleep 1
done
`;
}

/**
 * Before a droplet is deleted (replacement, scale-down, destroy): a leading agent hands over, the
 * agent leaves eligibility, the script waits until the IP has left this droplet, then stops the
 * agent. Never fails: the droplet is going away regardless, and the other agents take over anyway.
 */
export function deleteScript(timeoutS = 60, so?: ScriptOptions): string {
  const o = opts(so);
  return `set -u
${statusField(o)}
if ${o.service.isActive}; then
  if [ "$(status_field role)" = "leader" ]; then "${o.fipd}" handover || true; fi
  "${o.fipd}" maintenance on || true
  deadline=$(( $(date +%s) + ${timeoutS} ))
  while [ "$(status_field reservedIp.onThisDroplet)" = "true" ] || [ "$(status_field role)" = "leader" ]; do
    if [ "$(date +%s)" -ge "$deadline" ]; then echo "ha-lb: the IP is still on this droplet after ${timeoutS} s; stopping anyway" >&2; break; fi
    sleep 0.5
  done
  ${o.service.stop} || true
fi
exit 0
`;
}

/** Where the deploy writes the ACME install script (haproxy.ts acmeInstallScript) and its systemd units. */
export const ACME_INSTALL = {
  script: "/usr/local/lib/ha-lb/acme-install.sh",
  pathUnit: "/etc/systemd/system/halb-acme-install.path",
  serviceUnit: "/etc/systemd/system/halb-acme-install.service",
} as const;

/**
 * The systemd units that install fipd's issued certificates into HAProxy (issue 15). fipd runs as
 * `fipd` under ProtectSystem=strict: it cannot write /etc/haproxy nor reload HAProxy, so it only
 * writes public chains into its state dir, and this root-run pair does the rest. The path unit starts
 * the service when a file in stateDir changes (PathChanged: a chain written and renamed in place; a
 * missing directory is watched for from its parent); the service also runs once at boot, for a chain
 * that arrived while it could not run.
 */
export function acmeInstallUnits(stateDir: string, script: string = ACME_INSTALL.script): { path: string; service: string } {
  return {
    path: `# Installed by the ha-lb Pulumi stack: starts halb-acme-install.service when fipd writes an issued certificate.
[Unit]
Description=ha-lb: watch fipd's issued certificates (${stateDir})

[Path]
PathChanged=${stateDir}
Unit=halb-acme-install.service

[Install]
WantedBy=multi-user.target
`,
    service: `# Installed by the ha-lb Pulumi stack: puts fipd's issued certificates into HAProxy (root: fipd cannot).
[Unit]
Description=ha-lb: install certificates issued by fipd into HAProxy
After=haproxy.service

[Service]
Type=oneshot
ExecStart=/bin/sh ${script}
TimeoutStartSec=300

[Install]
WantedBy=multi-user.target
`,
  };
}

/**
 * Writes the ACME install script and its units (atomically, root-only script), reloads systemd and
 * enables both, starting the path unit. Does not run the service: `pulumi up`'s own HAProxy install
 * already prefers an issued chain.
 */
export function installAcmeUnitsScript(
  installScript: string,
  stateDir: string,
  paths: { script: string; pathUnit: string; serviceUnit: string } = ACME_INSTALL,
): string {
  const units = acmeInstallUnits(stateDir, paths.script);
  const write = (path: string, text: string, mode: string) => {
    if (text.split("\n").includes("HALB_EOF")) throw new Error(`installAcmeUnitsScript: ${path} holds the heredoc mark`);
    return `cat > "${path}.tmp" <<'HALB_EOF'
${text.endsWith("\n") ? text : `${text}\n`}HALB_EOF
chmod ${mode} "${path}.tmp"
mv "${path}.tmp" "${path}"`;
  };
  return `set -eu
mkdir -p "${paths.script.slice(0, paths.script.lastIndexOf("/"))}"
${write(paths.script, installScript, "700")}
${write(paths.pathUnit, units.path, "644")}
${write(paths.serviceUnit, units.service, "644")}
systemctl daemon-reload
systemctl enable halb-acme-install.service >/dev/null 2>&1
systemctl enable --now halb-acme-install.path >/dev/null 2>&1
echo "ha-lb: halb-acme-install.path watches ${stateDir}"
`;
}
