/**
 * userData: bootstrap only. It installs HAProxy and a supported Node.js LTS and creates the fipd user
 * and directories. Nothing in it depends on activeColor, backends, listen ports or secrets, so those
 * changes never replace a droplet (userData is ForceNew).
 *
 * Ubuntu 24.04's own Node.js (18) is end of life: Node comes from nodejs.org, pinned, checksum-checked.
 */
export const NODE_VERSION = "22.12.0";
/** sha256 of node-v22.12.0-linux-x64.tar.xz from https://nodejs.org/dist/v22.12.0/SHASUMS256.txt */
export const NODE_SHA256 = "22982235e1b71fa8850f82edd09cdae7e3f32df1764a9ec298c72d25ef2c164f";

export function bootstrapUserData(role: "lb" | "witness"): string {
  const tarball = `node-v${NODE_VERSION}-linux-x64.tar.xz`;
  return `#!/bin/bash
# ha-lb bootstrap (${role}). Config, agent and secrets arrive later over SSH from \`pulumi up\`.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q ${role === "lb" ? "haproxy " : ""}curl xz-utils
cd /tmp
curl -fsSLo ${tarball} https://nodejs.org/dist/v${NODE_VERSION}/${tarball}
echo "${NODE_SHA256}  ${tarball}" | sha256sum -c -
mkdir -p /opt/node
tar -xJf ${tarball} -C /opt/node --strip-components=1
# /usr/bin/node: the path fipd.service and the deploy scripts use (Ubuntu's nodejs package is not installed).
ln -sf /opt/node/bin/node /usr/bin/node
rm -f ${tarball}
id fipd >/dev/null 2>&1 || useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin fipd
install -d -m 0755 /opt/fipd
install -d -m 0750 -o fipd -g fipd /etc/fipd
${role === "lb" ? "systemctl enable --now haproxy\n" : ""}touch /var/lib/ha-lb-bootstrapped
`;
}
