import * as digitalocean from "@pulumi/digitalocean";
import * as pulumi from "@pulumi/pulumi";

export interface FirewallsArgs {
  prefix: string;
  lbTag: pulumi.Input<string>;
  witnessTag?: pulumi.Input<string>;
  /** What the LBs serve: each port opens to its allowCidrs, or to everyone (denyCidrs are HAProxy's: a cloud firewall only allows). */
  frontends: readonly { port: number; allowCidrs?: readonly string[] }[];
  adminCidrs: string[];
  metricsCidrs: string[];
  peerPort: number;
  metricsPort: number;
  /** HAProxy's Prometheus exporter: opened, like metricsPort, to metricsCidrs only. */
  haproxyMetricsPort: number;
  /** The witness's public address: the only outside source allowed on the peer port. */
  witnessAddress?: pulumi.Input<string>;
  /** Public addresses of the LBs (the witness talks to them over the internet). */
  lbPublicAddresses: pulumi.Input<string>[];
}

const ANY = ["0.0.0.0/0", "::/0"];
/** What a droplet needs outbound: DNS, HTTP(S) for apt and the DigitalOcean API, NTP, peers. */
const outbound = (peerPort: number) => [
  { protocol: "udp", portRange: "53", destinationAddresses: ANY },
  { protocol: "tcp", portRange: "53", destinationAddresses: ANY },
  { protocol: "tcp", portRange: "80", destinationAddresses: ANY },
  { protocol: "tcp", portRange: "443", destinationAddresses: ANY },
  { protocol: "udp", portRange: "123", destinationAddresses: ANY },
  { protocol: "udp", portRange: String(peerPort), destinationAddresses: ANY },
  { protocol: "tcp", portRange: "1-65535", destinationAddresses: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"] },
  { protocol: "icmp", destinationAddresses: ANY },
];

/** Cloud firewalls selected by tag: one for the LBs, one for the witness. */
export class Firewalls extends pulumi.ComponentResource {
  readonly lb: digitalocean.Firewall;
  readonly witness?: digitalocean.Firewall;
  constructor(name: string, a: FirewallsArgs, opts?: pulumi.ComponentResourceOptions) {
    super("ha-lb:index:Firewalls", name, {}, opts);
    const peerSources = {
      sourceTags: [a.lbTag],
      ...(a.witnessAddress ? { sourceAddresses: [a.witnessAddress] } : {}),
    };
    this.lb = new digitalocean.Firewall(
      `${name}-lb`,
      {
        name: `${a.prefix}-ha-lb`,
        tags: [a.lbTag],
        inboundRules: [
          // Exactly the frontends' ports; a frontend's allowCidrs restrict its port here too.
          ...a.frontends.map((f) => ({ protocol: "tcp", portRange: String(f.port), sourceAddresses: f.allowCidrs?.length ? [...f.allowCidrs] : ANY })),
          { protocol: "tcp", portRange: "22", sourceAddresses: a.adminCidrs },
          { protocol: "udp", portRange: String(a.peerPort), ...peerSources },
          // ACME chains between LBs (agent/acme/exchange.ts): TCP on the peer port number, LBs only
          // (the witness serves no HTTPS and takes no part).
          { protocol: "tcp", portRange: String(a.peerPort), sourceTags: [a.lbTag] },
          ...(a.metricsCidrs.length
            ? [a.metricsPort, a.haproxyMetricsPort].map((p) => ({ protocol: "tcp", portRange: String(p), sourceAddresses: a.metricsCidrs }))
            : []),
        ],
        outboundRules: outbound(a.peerPort),
      },
      { parent: this },
    );
    if (a.witnessTag) {
      this.witness = new digitalocean.Firewall(
        `${name}-witness`,
        {
          name: `${a.prefix}-ha-lb-witness`,
          tags: [a.witnessTag],
          inboundRules: [
            { protocol: "tcp", portRange: "22", sourceAddresses: a.adminCidrs },
            { protocol: "udp", portRange: String(a.peerPort), sourceAddresses: a.lbPublicAddresses },
            ...(a.metricsCidrs.length ? [{ protocol: "tcp", portRange: String(a.metricsPort), sourceAddresses: a.metricsCidrs }] : []),
          ],
          outboundRules: outbound(a.peerPort),
        },
        { parent: this },
      );
    }
    this.registerOutputs({});
  }
}
