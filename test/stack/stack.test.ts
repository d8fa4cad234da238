/** The Pulumi program under mocks: what it declares, what it must never do. */
import { describe, expect, it } from "vitest";
import { BASE_CONFIG, exampleStackConfig, plainView, runProgram, unwrap } from "./harness.js";

const droplets = (r: Awaited<ReturnType<typeof runProgram>>) => r.resources.filter((x) => x.type === "digitalocean:index/droplet:Droplet");

describe("the stack", () => {
  it("declares the tier: VPC, droplets per color, witness, a Reserved IP without a droplet, firewalls, components", async () => {
    const r = await runProgram({ ...BASE_CONFIG, "ha-lb:colors": JSON.stringify({ blue: { count: 2 }, green: { count: 2 } }) }, "prod");
    const names = droplets(r)
      .map((d) => d.name)
      .sort();
    expect(names).toEqual(["prod-lb-blue-1", "prod-lb-blue-2", "prod-lb-green-1", "prod-lb-green-2", "prod-witness"]);
    const witness = droplets(r).find((d) => d.name === "prod-witness")!;
    expect(witness.inputs.region).toBe("sfo3");
    for (const d of droplets(r).filter((d) => d.name.includes("-lb-"))) {
      expect(d.inputs.region).toBe("nyc3");
      expect(d.inputs.monitoring).toBe(true);
      expect(d.inputs.vpcUuid).toBeTruthy();
    }
    const rip = r.resources.filter((x) => x.type === "digitalocean:index/reservedIp:ReservedIp");
    expect(rip).toHaveLength(1);
    expect(rip[0].inputs.dropletId).toBeUndefined();
    expect(r.resources.some((x) => x.type === "digitalocean:index/reservedIpAssignment:ReservedIpAssignment")).toBe(false);
    expect(r.resources.filter((x) => x.type === "digitalocean:index/vpc:Vpc")).toHaveLength(1);
    const components = r.resources.filter((x) => x.type.startsWith("ha-lb:index:")).map((x) => x.type);
    expect(new Set(components)).toEqual(
      new Set([
        "ha-lb:index:HaLbCluster",
        "ha-lb:index:Network",
        "ha-lb:index:LoadBalancers",
        "ha-lb:index:Witness",
        "ha-lb:index:ReservedIp",
        "ha-lb:index:Firewalls",
        "ha-lb:index:AgentDeployment",
      ]),
    );
    expect(r.outputs.reservedIp).toBe("198.51.100.7");
    expect((r.outputs.loadBalancers as unknown[]).length).toBe(4);
  });

  it("firewalls: listen ports open, SSH only from admin CIDRs, peer port only from the cluster tag and the witness", async () => {
    const r = await runProgram({ ...BASE_CONFIG, "ha-lb:listenPorts": "[80, 443]" });
    const fw = r.resources.find((x) => x.type === "digitalocean:index/firewall:Firewall" && x.name.endsWith("-lb"))!;
    const rules = fw.inputs.inboundRules as Array<Record<string, any>>;
    expect(fw.inputs.tags).toEqual(["dev-ha-lb"]);
    expect(fw.inputs.dropletIds).toBeUndefined();
    expect(rules.find((x) => x.portRange === "443")!.sourceAddresses).toContain("0.0.0.0/0");
    expect(rules.find((x) => x.portRange === "22")!.sourceAddresses).toEqual(["203.0.113.0/24"]);
    const peer = rules.find((x) => x.portRange === "7946" && x.protocol === "udp")!;
    // ACME chains between LBs: TCP on the peer port, from the LB tag only (not the witness).
    expect(rules.filter((x) => x.portRange === "7946" && x.protocol === "tcp")).toEqual([{ protocol: "tcp", portRange: "7946", sourceTags: ["dev-ha-lb"] }]);
    expect(peer.sourceTags).toEqual(["dev-ha-lb"]);
    expect(peer.sourceAddresses).toHaveLength(1);
    expect(rules.some((x) => x.portRange === "9465")).toBe(false); // metrics closed without metricsCidrs
  });

  it("changing activeColor, backends or listenPorts changes no droplet input", async () => {
    const base = { ...BASE_CONFIG, "ha-lb:colors": JSON.stringify({ blue: { count: 2 }, green: { count: 1 } }) };
    const a = await runProgram(base);
    const b = await runProgram({ ...base, "ha-lb:activeColor": "green", "ha-lb:backends": JSON.stringify(["10.10.0.9:9000"]), "ha-lb:listenPorts": "[8080]" });
    const inputs = (r: typeof a) => Object.fromEntries(droplets(r).map((d) => [d.name, d.inputs]));
    expect(inputs(b)).toEqual(inputs(a));
    // ...while the HAProxy config and the agents' config do change (reload, not replace).
    const stdin = (r: typeof a, suffix: string) => r.resources.filter((x) => x.name.endsWith(suffix)).map((x) => JSON.stringify(unwrap(x.inputs.stdin)));
    expect(stdin(b, "-haproxy")).not.toEqual(stdin(a, "-haproxy"));
    expect(stdin(b, "-config")).not.toEqual(stdin(a, "-config"));
    // Same command and triggers: the provider re-runs `create` in place (a reload), it does not replace.
    // (By name: the restarts' dependsOn chain follows the color in force, so the order changes.)
    const cmd = (r: typeof a, suffix: string) =>
      Object.fromEntries(r.resources.filter((x) => x.name.endsWith(suffix)).map((x) => [x.name, [x.inputs.create, x.inputs.triggers]]));
    expect(cmd(b, "-haproxy")).toEqual(cmd(a, "-haproxy"));
    expect(cmd(b, "-restart")).toEqual(cmd(a, "-restart"));
  });

  it("secrets never appear in plain text: not in userData, command lines, triggers, outputs", async () => {
    const r = await runProgram(BASE_CONFIG);
    const plain = JSON.stringify(r.resources.map((x) => plainView(x.inputs))) + JSON.stringify(r.outputs);
    expect(plain).not.toContain("TOKENSECRET");
    expect(plain).not.toContain("SSHKEYSECRET");
    expect(plain).not.toContain("PRIVATE KEY"); // the identity keys (test/stack/identity.test.ts)
    // The token does reach the LB agents, through secret stdin only.
    const configs = r.resources.filter((x) => x.type === "command:remote:Command" && x.name.endsWith("-config"));
    expect(configs.length).toBe(3);
    for (const c of configs) {
      expect(plainView(c.inputs.stdin)).toBe("[secret]");
      const payload = JSON.parse(unwrap(c.inputs.stdin) as string);
      expect(payload.identityKey).toMatch(/^-----BEGIN PRIVATE KEY-----\n/);
      if (payload.config.members.find((m: { id: string }) => m.id === payload.config.nodeId).role === "lb") expect(payload.token).toContain("TOKENSECRET");
      else expect(payload.token).toBeUndefined();
    }
    // userData is secret as a whole (it holds the droplet's SSH host key, test/stack/host-key.test.ts);
    // even so, none of the agents' secrets or the per-deploy settings are in it.
    for (const d of droplets(r)) {
      expect(plainView(d.inputs.userData)).toBe("[secret]");
      expect(String(unwrap(d.inputs.userData))).toMatch(/^#!\/bin\/bash\n/);
      expect(String(unwrap(d.inputs.userData))).not.toMatch(/TOKENSECRET|SSHKEYSECRET|activeColor|10\.10\.0\.5|BEGIN PRIVATE KEY/i);
    }
  });

  it("agent configs: one per node, the same members, VPC addresses between LBs, public ones from the witness", async () => {
    const r = await runProgram(BASE_CONFIG);
    const payloads = r.resources
      .filter((x) => x.name.endsWith("-config") && x.type === "command:remote:Command")
      .map((x) => JSON.parse(unwrap(x.inputs.stdin) as string).config);
    // Node ids are droplet name + droplet ID: a replaced droplet is a new member, never a second
    // process under an old id.
    const ids = payloads.map((p) => p.nodeId as string);
    expect(ids.every((id) => /^dev-(lb-blue-[12]|witness)-4000\d\d$/.test(id))).toBe(true);
    const lb = payloads.find((p) => p.nodeId.startsWith("dev-lb-blue-1-"));
    const w = payloads.find((p) => p.nodeId.startsWith("dev-witness-"));
    expect(lb.nodeId).toBe(`dev-lb-blue-1-${lb.dropletId}`);
    expect(lb.members.map((m: { id: string }) => m.id.replace(/-\d+$/, ""))).toEqual(["dev-lb-blue-1", "dev-lb-blue-2", "dev-witness"]);
    expect(new Set(payloads.map((p) => JSON.stringify(p.members.map((m: { id: string }) => m.id))))).toHaveProperty("size", 1);
    // The membership version is updated (raised by one: joint consensus) exactly when these ids
    // change, e.g. when a droplet is replaced and so gets a new ID: they are its only changing input.
    // (test/stack/membership-version.test.ts runs its deploys.)
    const epoch = r.resources.find((x) => x.name.endsWith("-membership-epoch"))!;
    expect(epoch.inputs.environment).toEqual({ HALB_MEMBER_IDS: lb.members.map((m: { id: string }) => m.id).join(",") });
    expect(epoch.inputs.triggers).toBeUndefined();
    expect(lb.members[1].address).toMatch(/^10\.10\.10\./);
    expect(w.members[1].address).toMatch(/^203\.0\.113\./);
    expect(lb.reservedIp).toBe("198.51.100.7");
    expect(lb.membershipVersion).toBe(1767225600);
  });

  it("every droplet gets bundle, unit, HAProxy config, secret config, a restart and a retire step; one switch check", async () => {
    const r = await runProgram(BASE_CONFIG);
    const byName = (suffix: string) => r.resources.filter((x) => x.name.endsWith(suffix) && !x.name.endsWith(`-leader${suffix}`));
    expect(byName("-restart")).toHaveLength(3);
    for (const x of byName("-restart")) {
      expect(x.inputs.create).toContain("systemctl restart fipd");
      expect(x.inputs.create).not.toContain('fipd" handover'); // a leader waits for the second pass
      expect(x.inputs.create).toMatch(/status --wait-healthy --timeout 120/);
      expect(x.inputs.triggers[0]).toMatch(/^[0-9a-f]{64}$/); // the bundle's sha256: a new bundle restarts
    }
    expect(byName("-leader-restart")).toHaveLength(3);
    for (const x of byName("-leader-restart")) {
      expect(x.inputs.create).toMatch(/fipd" handover --prefer-build [0-9a-f]{16}/);
      expect(x.inputs.create).toContain("systemctl restart fipd");
      expect(x.inputs.triggers).toEqual(r.resources.find((y) => y.name === x.name.replace(/-leader-restart$/, "-restart"))!.inputs.triggers);
    }
    expect(byName("-haproxy")).toHaveLength(2); // LBs only
    const bundles = r.resources.filter((x) => x.type === "command:remote:CopyToRemote" && x.name.endsWith("-bundle"));
    expect(bundles).toHaveLength(3);
    expect(bundles[0].inputs.remotePath).toMatch(/^\/opt\/fipd\/fipd-[0-9a-f]{16}\.cjs$/);
    for (const x of byName("-config")) {
      expect(x.inputs.create).toContain("apply-config");
      expect(x.inputs.logging).toBe("none");
    }
    expect(byName("-retire").every((x) => String(x.inputs.delete).includes("maintenance on") && String(x.inputs.delete).includes("handover"))).toBe(true);
    const check = byName("-switch-check");
    expect(check).toHaveLength(1);
    expect(check[0].inputs.create).toContain('= "blue"');
    expect(check[0].inputs.triggers[0]).toBe("blue");
  });

  it("a config-only change (activeColor) changes apply-config's stdin only: same command, same triggers, so a re-run (reload), no restart", async () => {
    const base = { ...BASE_CONFIG, "ha-lb:colors": JSON.stringify({ blue: { count: 2 }, green: { count: 2 } }) };
    const a = await runProgram(base);
    const b = await runProgram({ ...base, "ha-lb:activeColor": "green" });
    // By name: the restarts' dependsOn chain (rollingOrder) follows the color in force, so their order changes.
    const view = (r: typeof a, suffix: string) =>
      Object.fromEntries(r.resources.filter((x) => x.name.endsWith(suffix)).map((x) => [x.name, { create: x.inputs.create, triggers: x.inputs.triggers }]));
    expect(view(b, "-config")).toEqual(view(a, "-config"));
    expect(view(b, "-restart")).toEqual(view(a, "-restart"));
    const stdin = (r: typeof a) =>
      r.resources.filter((x) => x.name.endsWith("-config")).map((x) => JSON.parse(unwrap(x.inputs.stdin) as string).config.activeColor);
    expect(stdin(a).every((c) => c === "blue")).toBe(true);
    expect(stdin(b).every((c) => c === "green")).toBe(true);
    // The switch check is what runs again (triggers changed) and fails the deploy if green never takes over.
    const check = b.resources.find((x) => x.name.endsWith("-switch-check"))!;
    expect(check.inputs.triggers[0]).toBe("green");
    expect(check.inputs.create).toContain('= "green"');
  });

  it("adopts an existing Reserved IP with get (nothing created, nothing to delete)", async () => {
    const r = await runProgram({ ...BASE_CONFIG, "ha-lb:reservedIp": "198.51.100.42" });
    const rips = r.resources.filter((x) => x.type === "digitalocean:index/reservedIp:ReservedIp");
    expect(rips).toHaveLength(1);
    expect(rips[0].id).toBe("198.51.100.42");
    expect(r.outputs.reservedIp).toBe("198.51.100.42");
  });
});

describe("the example stacks", () => {
  const secrets = { "ha-lb:agentToken": BASE_CONFIG["ha-lb:agentToken"], "ha-lb:sshPrivateKey": BASE_CONFIG["ha-lb:sshPrivateKey"] };
  it("Pulumi.dev.yaml: 2 blue LBs + witness, smallest sizes", async () => {
    const r = await runProgram({ ...exampleStackConfig("dev"), ...secrets }, "dev");
    const ds = droplets(r);
    expect(ds.map((d) => d.name).sort()).toEqual(["dev-lb-blue-1", "dev-lb-blue-2", "dev-witness"]);
    expect(ds.find((d) => d.name === "dev-witness")!.inputs.size).toBe("s-1vcpu-512mb-10gb");
    expect(ds.filter((d) => d.name.includes("-lb-")).every((d) => d.inputs.size === "s-1vcpu-1gb")).toBe(true);
    expect(r.outputs.activeColor).toBe("blue");
    expect(r.warnings).toEqual([]);
  });
  it("Pulumi.prod.yaml: 2 blue + 2 green + witness, one firewall each for LBs and witness", async () => {
    const r = await runProgram({ ...exampleStackConfig("prod"), ...secrets }, "prod");
    expect(
      droplets(r)
        .map((d) => d.name)
        .sort(),
    ).toEqual(["prod-lb-blue-1", "prod-lb-blue-2", "prod-lb-green-1", "prod-lb-green-2", "prod-witness"]);
    expect(r.resources.filter((x) => x.type === "digitalocean:index/firewall:Firewall").map((x) => x.inputs.tags)).toEqual([
      ["prod-ha-lb"],
      ["prod-ha-lb-witness"],
    ]);
    expect(
      r.resources
        .filter((x) => x.type === "digitalocean:index/tag:Tag")
        .map((x) => x.inputs.name)
        .sort(),
    ).toEqual(["prod-ha-lb", "prod-ha-lb-blue", "prod-ha-lb-green", "prod-ha-lb-witness"]);
    // 5 voters: odd, no warning.
    expect(r.warnings).toEqual([]);
  });
});

describe("stack config validation", () => {
  it("reports one line per bad key, with what is expected", async () => {
    const bad = { ...BASE_CONFIG, "ha-lb:region": "New York", "ha-lb:activeColor": "red", "ha-lb:adminCidrs": JSON.stringify(["everyone"]) };
    delete (bad as Record<string, string>)["ha-lb:agentToken"];
    const err = await runProgram(bad).then(
      () => null,
      (e: Error) => e,
    );
    expect(err).not.toBeNull();
    const lines = err!.message
      .split("\n")
      .slice(1)
      .map((l) => l.trim());
    expect(lines).toHaveLength(4);
    expect(lines.find((l) => l.startsWith("ha-lb:region:"))).toMatch(/region slug.*expected/);
    expect(lines.find((l) => l.startsWith("ha-lb:activeColor:"))).toMatch(/blue or green/);
    expect(lines.find((l) => l.startsWith("ha-lb:adminCidrs:"))).toMatch(/CIDR/);
    expect(lines.find((l) => l.startsWith("ha-lb:agentToken:"))).toMatch(/is required.*--secret/);
  });

  it("refuses 2 LBs without a witness, and an active color with no droplets", async () => {
    const noWitness = { ...BASE_CONFIG };
    delete (noWitness as Record<string, string>)["ha-lb:witnessRegion"];
    await expect(runProgram(noWitness)).rejects.toThrow(/witnessRegion: 2 load balancers and no witness cannot survive the loss of one/);
    await expect(runProgram({ ...BASE_CONFIG, "ha-lb:activeColor": "green" })).rejects.toThrow(/activeColor: green has no droplets/);
    await expect(runProgram({ ...BASE_CONFIG, "ha-lb:witnessRegion": "nyc3" })).rejects.toThrow(/witnessRegion: must differ from region/);
  });
});
