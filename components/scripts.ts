/**
 * The shell commands `pulumi up` runs on each droplet over SSH (via @pulumi/command). Pure functions,
 * so the network-namespace tests can run exactly these. Secrets never appear here: they travel on
 * the command's stdin (see agentPayload in agent-deployment.ts).
 */
export const FIPD_DIR = "/opt/fipd";
export const UNIT_PATH = "/etc/systemd/system/fipd.service";
export const bundlePath = (sha256: string) => `${FIPD_DIR}/fipd-${sha256.slice(0, 16)}.cjs`;

/** Wait for cloud-init's bootstrap (userData) to finish: a fresh droplet answers SSH before it has. */
export const waitForBootstrapScript = () => `set -eu
for i in $(seq 1 300); do [ -f /var/lib/ha-lb-bootstrapped ] && exit 0; sleep 2; done
echo "ha-lb: bootstrap (cloud-init) did not finish within 10 minutes; see /var/log/cloud-init-output.log" >&2
exit 1
`;

/**
 * Write config and secrets (JSON on stdin) with the bundle's own validator, then reload a running
 * agent (SIGHUP semantics: the IP is not dropped). Used for every config change, e.g. activeColor.
 */
export const applyConfigScript = (sha256: string) => `set -eu
/usr/local/bin/node ${bundlePath(sha256)} apply-config --dir /etc/fipd --owner fipd
`;

/**
 * Activate a bundle: point /opt/fipd/fipd.cjs at it and restart the agent. SIGTERM makes a leading
 * agent hand over and wait until another droplet holds the IP, so this is safe one droplet at a
 * time; then wait until the cluster is healthy again (a leader of the color in force holds the IP, a
 * majority is connected) or fail the deploy.
 */
export const rolloutScript = (sha256: string, timeoutS = 120) => `set -eu
ln -sfn ${bundlePath(sha256)} ${FIPD_DIR}/fipd.cjs
cat > /usr/local/bin/fipd <<'WRAP'
#!/bin/sh
exec /usr/local/bin/node ${FIPD_DIR}/fipd.cjs "$@"
WRAP
chmod 755 /usr/local/bin/fipd
/usr/local/bin/fipd check-config /etc/fipd/fipd.yaml
systemctl daemon-reload
systemctl enable fipd >/dev/null 2>&1
systemctl restart fipd
/usr/local/bin/fipd status --wait-healthy --timeout ${timeoutS}
`;

/**
 * After a config change: wait until the cluster agrees and no color switch is pending. A switch to a
 * color with no healthy node fails here, so `pulumi up` reports it (the IP stays on the old color).
 */
export const waitHealthyScript = (timeoutS = 120) => `set -eu
/usr/local/bin/fipd status --wait-healthy --timeout ${timeoutS}
`;

/**
 * Before a droplet is deleted (replacement, scale-down, destroy): leave eligibility, hand over, wait
 * until the IP has left this droplet, then stop the agent.
 */
export const retireScript = (timeoutS = 60) => `set -u
if systemctl is-active --quiet fipd; then
  /usr/local/bin/fipd maintenance on || true
  for i in $(seq 1 ${timeoutS * 4}); do
    /usr/local/bin/fipd status --json 2>/dev/null | grep -q '"onThisDroplet": true' || break
    sleep 0.25
  done
  systemctl stop fipd || true
fi
exit 0
`;
