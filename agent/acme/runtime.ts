/**
 * fipd's ACME parts wired together (agent/run.ts starts this on an LB whose config has `acme`):
 * the store (chains on disk, tokens in memory), the HTTP-01 responder on 127.0.0.1, and the manager
 * that orders while this node asserts the Reserved IP.
 */
import { createPrivateKey, createPublicKey, type KeyObject } from "node:crypto";
import { readFileSync, realpathSync } from "node:fs";
import { dirname, join } from "node:path";
import { publicKeysOf, type AcmeConfig, type AgentConfig } from "../config.js";
import { parsePublicKey, type PublicIdentity } from "../identity.js";
import type { Logger } from "../log.js";
import type { FipdMetrics } from "../metrics.js";
import { AcmeManager, type AcmeCertificateStatus } from "./manager.js";
import { startAcmeResponder, type AcmeResponder } from "./responder.js";
import { AcmeStore } from "./store.js";

/** The child's bundle: beside the running fipd bundle (the deploy ships both; `npm run build` writes both to dist/). */
export function acmeChildPath(script = process.argv[1]): string {
  return join(dirname(realpathSync(script)), "fipd-acme.cjs");
}

export interface AcmeRuntime {
  store: AcmeStore;
  manager: AcmeManager;
  responder: AcmeResponder;
  status(): AcmeCertificateStatus[];
  updateConfig(cfg: AcmeConfig): void;
  close(): Promise<void>;
}

export async function startAcme(o: {
  config: AcmeConfig;
  log: Logger;
  metrics: FipdMetrics;
  childPath?: string;
  onToken?(token: string, keyAuthorization: string, expiresAtMs: number): void;
}): Promise<AcmeRuntime> {
  let cfg = o.config;
  const log = o.log.child({ part: "acme" });
  // The certificate keys' public halves, read once per name (and again after a reload): the store checks each chain against them.
  const publicKeys = new Map<string, KeyObject | null>();
  const publicKeyFor = (name: string): KeyObject | undefined => {
    if (!publicKeys.has(name)) {
      const path = join(cfg.keyDir, `${name}.key`);
      try {
        publicKeys.set(name, createPublicKey(createPrivateKey(readFileSync(path))));
      } catch (e) {
        log.error("cannot read a certificate key: chains for it are refused", {
          certificate: name,
          path,
          error: (e as NodeJS.ErrnoException).code ?? "not a private key",
        });
        publicKeys.set(name, null);
      }
    }
    return publicKeys.get(name) ?? undefined;
  };
  const store = new AcmeStore({
    stateDir: cfg.stateDir,
    nowMs: () => Date.now(),
    publicKeyFor,
    domainsFor: (name) => cfg.certificates.find((c) => c.name === name)?.domains,
  });
  store.load();
  for (const p of store.loadProblems) log.warn("stored chain not used", { problem: p });
  const manager = new AcmeManager({
    config: cfg,
    store,
    log,
    nowMs: () => Date.now(),
    childPath: o.childPath ?? acmeChildPath(),
    onToken: o.onToken,
    onFailure: (name, reason) => o.metrics.acmeOrderFailures.inc({ name, reason }),
  });
  const responder = await startAcmeResponder({ port: cfg.responderPort, store });
  log.info("ACME responder listening", { port: responder.port, chains: store.chains().map((c) => c.name) });
  return {
    store,
    manager,
    responder,
    status: () => manager.status(),
    updateConfig(next) {
      cfg = next;
      publicKeys.clear();
      manager.updateConfig(next);
    },
    async close() {
      manager.close();
      await responder.close();
    },
  };
}

/** The LB peers of this node: ACME tokens and chains go to LBs only (the witness serves no HTTP). */
export function lbPeers(c: AgentConfig): AgentConfig["members"] {
  return c.members.filter((m) => m.id !== c.nodeId && m.role === "lb");
}

/**
 * The public identities accepted for member `id` under config `c` (current, and previous during a key
 * roll); none for a stranger. Parsed keys are cached by their text: the exchange checks a frame or two a minute.
 */
export function memberIdentities(): (c: AgentConfig, id: string) => PublicIdentity[] {
  const parsed = new Map<string, PublicIdentity>();
  const parse = (text: string) => {
    let k = parsed.get(text);
    if (!k) {
      if (parsed.size > 64) parsed.clear();
      k = parsePublicKey(text);
      parsed.set(text, k);
    }
    return k;
  };
  return (c, id) => {
    if (!c.members.some((m) => m.id === id)) return [];
    const k = publicKeysOf(c, id);
    return [parse(k.publicKey), ...(k.previousPublicKey ? [parse(k.previousPublicKey)] : [])];
  };
}
