/**
 * The metadata-service guard: on every droplet, only root, the agent's user (`fipd`) and DigitalOcean's
 * monitoring agent (`do-agent`, present because the droplets are created with `monitoring: true`)
 * may reach 169.254.169.254. userData holds the droplet's SSH host private key (cloud-init.ts), and
 * the metadata service serves userData to any local process that asks, without a token.
 *
 * nftables matches the sending socket's owner (`meta skuid`) in an output chain. The ruleset itself
 * names no user but root (uid 0): user names resolve at load time, and a name that does not exist
 * makes nft refuse the whole file, which would leave the service open. So the loader loads the
 * ruleset and the uids of the users that exist in one nft transaction (all or nothing); a user
 * that appears later (do-agent, installed by DigitalOcean's vendor script) is let in at the next
 * boot, when the unit loads the guard again.
 *
 * Pure: text only. cloud-init.ts installs it; test/stack/metadata-guard.test.ts checks it with
 * `nft -c` and loads it in a network namespace.
 */
import { METADATA_IPV4 } from "../agent/ports.js";

/** The nftables table the guard owns (and nothing else touches). */
export const METADATA_GUARD_TABLE = "halb_metadata_guard";
/** The set of uids allowed to reach the metadata service. */
export const METADATA_GUARD_SET = "allowed_uids";
/** Users let in besides root, when they exist: the agent, and DigitalOcean's monitoring agent. */
export const METADATA_GUARD_USERS = ["fipd", "do-agent"] as const;

export const METADATA_GUARD_RULESET_PATH = "/etc/ha-lb/metadata-guard.nft";
export const METADATA_GUARD_LOADER_PATH = "/usr/local/sbin/ha-lb-metadata-guard";
export const METADATA_GUARD_UNIT = "ha-lb-metadata-guard.service";

const USER_NAME = /^[a-z_][a-z0-9_-]{0,31}$/;

/**
 * The ruleset: root only (fail-closed until the loader adds the other uids in the same
 * transaction). Loading it again replaces the table (declare, delete, define), so it is idempotent.
 * TCP gets a reset (a denied client fails at once instead of hanging), anything else is dropped.
 */
export function metadataGuardRuleset(): string {
  const t = `inet ${METADATA_GUARD_TABLE}`;
  return `# ha-lb: the metadata service (${METADATA_IPV4}) only for root and the users the loader adds (${METADATA_GUARD_USERS.join(", ")}).
table ${t} {
}
delete table ${t}
table ${t} {
  set ${METADATA_GUARD_SET} {
    typeof meta skuid
    elements = { 0 }
  }
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr ${METADATA_IPV4} meta skuid @${METADATA_GUARD_SET} accept
    ip daddr ${METADATA_IPV4} meta l4proto tcp counter reject with tcp reset
    ip daddr ${METADATA_IPV4} counter drop
  }
}
`;
}

/**
 * The loader (a shell script run as root by the unit): the ruleset plus the uids of the users that
 * exist, in one `nft -f` transaction.
 */
export function metadataGuardLoader(users: readonly string[] = METADATA_GUARD_USERS, rulesetPath = METADATA_GUARD_RULESET_PATH, nft = "nft"): string {
  for (const u of users) if (!USER_NAME.test(u)) throw new Error(`metadata guard: ${JSON.stringify(u)} is not a user name (expected ${USER_NAME})`);
  return `#!/bin/sh
# ha-lb: load the metadata-service guard (${METADATA_GUARD_TABLE}) with the uids of the users that exist.
set -eu
uids=""
for u in ${users.join(" ")}; do
  if uid=$(id -u "$u" 2>/dev/null); then uids="\${uids:+$uids, }$uid"; fi
done
{
  cat "${rulesetPath}"
  if [ -n "$uids" ]; then echo "add element inet ${METADATA_GUARD_TABLE} ${METADATA_GUARD_SET} { $uids }"; fi
} | ${nft} -f -
echo "ha-lb: metadata service ${METADATA_IPV4}: allowed to uid 0\${uids:+, $uids} only" >&2
`;
}

/** Loads the guard at every boot, before the network is up. */
export function metadataGuardUnit(): string {
  return `[Unit]
Description=ha-lb: the metadata service (${METADATA_IPV4}) only for root, ${METADATA_GUARD_USERS.join(" and ")}
DefaultDependencies=no
Wants=network-pre.target
Before=network-pre.target shutdown.target
After=local-fs.target
Conflicts=shutdown.target

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=${METADATA_GUARD_LOADER_PATH}

[Install]
WantedBy=multi-user.target
`;
}
