/**
 * keepalived in the network test bed, as users set it up for a DigitalOcean Reserved IP:
 *
 * - "copied": the configuration of DigitalOcean's tutorial: VRRP over unicast on the private
 *   interface, advert_int 1 (the default), a track script every 2 s, and a notify_master script
 *   that asks the API to assign the IP to its own droplet (one request, no waiting, no retry);
 * - "tuned": what an expert would do: VRRPv3 with advert_int 0.1, the track script every second
 *   with fall 1, the same notify script.
 *
 * The tutorial's track script is `pidof haproxy`; every namespace here shares one PID space, so the
 * check asks for this droplet's HAProxy by its pidfile instead. Same meaning, one droplet.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { chmodSync, createWriteStream, existsSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { METADATA_URL } from "../agent/ports.js";
import { HOST_IP, RESERVED_IP, type NetBed } from "../testbed/netbed/bed.js";

export type KeepalivedFlavor = "copied" | "tuned";

export function keepalivedConfig(o: {
  flavor: KeepalivedFlavor;
  selfIp: string;
  peers: string[];
  priority: number;
  checkScript: string;
  notifyScript: string;
  iface?: string;
}): string {
  const iface = o.iface ?? "eth1";
  const tuned = o.flavor === "tuned";
  return `global_defs {
  script_user root
  enable_script_security
${tuned ? "  vrrp_version 3\n" : ""}}

vrrp_script chk_haproxy {
  script "${o.checkScript}"
  interval ${tuned ? 1 : 2}
${tuned ? "  fall 1\n  rise 1\n" : ""}}

vrrp_instance VI_1 {
  interface ${iface}
  state ${o.priority >= 200 ? "MASTER" : "BACKUP"}
  priority ${o.priority}
  virtual_router_id 33
${tuned ? "  advert_int 0.1\n" : ""}  unicast_src_ip ${o.selfIp}
  unicast_peer {
${o.peers.map((p) => `    ${p}`).join("\n")}
  }
${tuned ? "" : "  authentication {\n    auth_type PASS\n    auth_pass halbpass\n  }\n"}  track_script {
    chk_haproxy
  }
${tuned ? `  # VRRPv3 needs one virtual address: an unused placeholder on the VPC (the real move is the API call).\n  virtual_ipaddress {\n    198.51.100.190/32 dev ${iface}\n  }\n` : ""}  notify_master ${o.notifyScript}
}
`;
}

export class KeepalivedCluster {
  private readonly procs = new Map<string, ChildProcess>();

  constructor(
    private readonly bed: NetBed,
    readonly flavor: KeepalivedFlavor,
    /** The droplets that run keepalived (the tutorial's pair): the first is the MASTER. */
    readonly ids: string[],
  ) {
    ids.forEach((id, i) => this.writeFiles(id, i === 0 ? 200 : 100));
  }

  private writeFiles(id: string, priority: number): void {
    const bed = this.bed;
    const n = bed.node(id);
    const check = join(n.dir, "chk_haproxy.sh");
    writeFileSync(check, `#!/bin/sh\nkill -0 "$(cat ${bed.haproxyPaths(id).pid} 2>/dev/null)" 2>/dev/null\n`);
    chmodSync(check, 0o700);
    const token = join(n.dir, "do-token");
    writeFileSync(token, bed.token, { mode: 0o600 });
    // The tutorial's assign-ip: one POST to the API for this droplet (its ID from the metadata service).
    const notify = join(n.dir, "master.sh");
    writeFileSync(
      notify,
      `#!/bin/sh
id=$(curl -s --max-time 2 ${METADATA_URL}/metadata/v1/id)
curl -s --max-time 10 -X POST -H "Content-Type: application/json" -H "Authorization: Bearer $(cat ${token})" \\
  -d "{\\"type\\":\\"assign\\",\\"droplet_id\\":$id}" http://${HOST_IP}:${bed.emulator.metadataServer.port}/v2/reserved_ips/${RESERVED_IP}/actions > /dev/null
`,
    );
    chmodSync(notify, 0o700);
    const peers = this.ids.filter((x) => x !== id).map((x) => bed.node(x).vpcIp!);
    writeFileSync(
      join(n.dir, "keepalived.conf"),
      keepalivedConfig({ flavor: this.flavor, selfIp: n.vpcIp!, peers, priority, checkScript: check, notifyScript: notify }),
    );
  }

  running(id: string): boolean {
    return this.procs.has(id);
  }

  start(id: string): void {
    const n = this.bed.node(id);
    if (this.procs.has(id)) return;
    const p = spawn(
      "ip",
      [
        "netns",
        "exec",
        n.ns,
        "keepalived",
        "-n",
        "-l",
        "-D",
        "-f",
        join(n.dir, "keepalived.conf"),
        "-p",
        join(n.dir, "ka.pid"),
        "-r",
        join(n.dir, "ka-vrrp.pid"),
        "-c",
        join(n.dir, "ka-chk.pid"),
      ],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    const log = createWriteStream(join(n.dir, "keepalived.log"), { flags: "a" });
    p.stdout!.pipe(log);
    p.stderr!.pipe(log);
    this.procs.set(id, p);
    p.on("exit", () => this.procs.delete(id));
  }

  /** Every keepalived process of this droplet (parent and children), by their pidfiles and parent. */
  private pids(id: string): number[] {
    const n = this.bed.node(id);
    const out = new Set<number>();
    for (const f of ["ka.pid", "ka-vrrp.pid", "ka-chk.pid"]) {
      const path = join(n.dir, f);
      if (existsSync(path)) out.add(Number(readFileSync(path, "utf8").trim()));
    }
    const parent = this.procs.get(id)?.pid;
    if (parent) {
      out.add(parent);
      for (const d of readdirSync("/proc").filter((x) => /^\d+$/.test(x))) {
        try {
          const stat = readFileSync(`/proc/${d}/stat`, "utf8");
          const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
          if (ppid === parent) out.add(Number(d));
        } catch {
          /* exited */
        }
      }
    }
    return [...out].filter((p) => p > 1);
  }

  async stop(id: string, signal: NodeJS.Signals): Promise<void> {
    const pids = this.pids(id);
    const main = this.procs.get(id);
    if (signal === "SIGKILL") {
      // Freeze every process first: a child that saw its parent die would still send VRRP's
      // "priority 0" goodbye, which is a graceful stop, not a crash.
      for (const sig of ["SIGSTOP", "SIGKILL"] as const) {
        for (const p of pids) {
          try {
            process.kill(p, sig);
          } catch {
            /* gone */
          }
        }
      }
    } else main?.kill(signal);
    for (let i = 0; i < 100 && this.procs.has(id); i++) await new Promise((r) => setTimeout(r, 50));
    this.procs.delete(id);
  }

  async close(): Promise<void> {
    for (const id of this.ids) await this.stop(id, "SIGKILL");
  }
}
