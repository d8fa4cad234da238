/**
 * Pebble, Let's Encrypt's ACME test server (Debian package `pebble`), for the ACME tests.
 *
 * Runs `pebble-challtestsrv` as Pebble's DNS server only (its own challenge servers off): every A
 * query answers `dnsTarget` (the Reserved IP in the network bed; 127.0.0.1 on the host) and no AAAA,
 * so Pebble's HTTP-01 validation goes to `dnsTarget:httpPort` as the CA's would go to the Reserved IP.
 * `setA` points one name elsewhere (a domain that does not resolve to the Reserved IP).
 *
 * Pebble's own HTTPS endpoint needs a certificate, which Debian does not ship: the harness makes a
 * throwaway CA and a certificate for `listenIp`, and gives the CA's file (`caFile`) to fipd's
 * `directoryCaFile`. Pebble's issuing root is new at every start (`rootPem()`), so a test that wants
 * "the CA unreachable" drops its packets (nft) or closes a port in front of it rather than restarting it.
 *
 * Environment: PEBBLE_VA_NOSLEEP=1 (no random validation delays), PEBBLE_AUTHZREUSE=0 (every order
 * validates again, so each renewal exercises the responder). Pebble's random badNonce answers stay
 * on: acme-client retries those itself, as it must with a real CA.
 *
 * With `ns`, both processes run in that network namespace (`ip netns exec`): the bed's client
 * namespace, so validation crosses the router's NAT. Everything lives in a `halb-pebble-*`
 * directory, removed by stop(); processes are stopped by PID. Every wait is bounded.
 */
import { execFileSync, spawn, type ChildProcess } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface PebbleOptions {
  /** Network namespace to run in; absent: this one. */
  ns?: string;
  /** The address Pebble's ACME directory and management listen on (and its TLS certificate names). Default 127.0.0.1. */
  listenIp?: string;
  /** What every A query answers: where validation requests go. */
  dnsTarget: string;
  /** The port Pebble validates HTTP-01 on (80 in the bed; the responder's port on the host). */
  httpPort?: number;
  /** Pebble's ACME port (default 14000), management port (15000), DNS port (8053, on 127.0.0.1), challtestsrv management (8055, on 127.0.0.1). */
  acmePort?: number;
  managementPort?: number;
  dnsPort?: number;
  dnsManagementPort?: number;
  /** Lifetime of the certificates Pebble issues, in seconds (Pebble's certificateValidityPeriod); default Pebble's (about 5 years). */
  certificateValiditySeconds?: number;
  /** External account binding: required, with these key ids and base64url HMAC keys. */
  eab?: Record<string, string>;
  /** How long to wait for both servers to listen. */
  startTimeoutMs?: number;
}

export interface Pebble {
  dir: string;
  /** https://listenIp:acmePort/dir */
  directoryUrl: string;
  /** PEM of the CA that signed Pebble's TLS certificate: fipd's acme.certificates[].directoryCaFile. */
  caFile: string;
  /** Pebble's current issuing root (PEM), from its management interface. */
  rootPem(): string;
  /** Points `host` at `ip` in the DNS (instead of dnsTarget). */
  setA(host: string, ip: string): void;
  /** Removes what setA set: the name answers dnsTarget again. */
  clearA(host: string): void;
  /** Pebble's log so far (what it validated, why an order failed). */
  log(): string;
  stop(): Promise<void>;
}

const openssl = (args: string[], cwd: string) => execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });

function inNs(ns: string | undefined, cmd: string, args: string[]): [string, string[]] {
  return ns ? ["ip", ["netns", "exec", ns, cmd, ...args]] : [cmd, args];
}

/** A throwaway CA and a certificate for `ip` (and localhost), for Pebble's HTTPS listener. */
function makeTls(dir: string, ip: string): { caFile: string; certFile: string; keyFile: string } {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(["req", "-x509", ...ec, "-keyout", "tls-ca.key", "-out", "tls-ca.pem", "-days", "2", "-subj", "/CN=ha-lb Pebble TLS test CA"], dir);
  writeFileSync(join(dir, "tls.ext"), `subjectAltName=IP:${ip},DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl(["req", ...ec, "-keyout", "tls.key", "-out", "tls.csr", "-subj", "/CN=pebble"], dir);
  openssl(
    ["x509", "-req", "-in", "tls.csr", "-CA", "tls-ca.pem", "-CAkey", "tls-ca.key", "-CAcreateserial", "-out", "tls.pem", "-days", "2", "-extfile", "tls.ext"],
    dir,
  );
  return { caFile: join(dir, "tls-ca.pem"), certFile: join(dir, "tls.pem"), keyFile: join(dir, "tls.key") };
}

/** Waits until `proc`'s output (appended to `file`) matches `ready`, or fails with its output. */
async function waitFor(proc: ChildProcess, file: string, ready: RegExp, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const text = readFileSync(file, "utf8");
    if (ready.test(text)) return;
    if (proc.exitCode !== null || proc.signalCode !== null)
      throw new Error(`${what} exited (${proc.exitCode ?? proc.signalCode}) before it listened:\n${text.slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen within ${timeoutMs} ms:\n${readFileSync(file, "utf8").slice(-2000)}`);
}

async function stopProcess(p: ChildProcess): Promise<void> {
  if (p.exitCode !== null || p.signalCode !== null) return;
  const exited = new Promise<void>((r) => p.once("exit", () => r()));
  p.kill("SIGTERM");
  const timer = setTimeout(() => p.kill("SIGKILL"), 3_000);
  await exited;
  clearTimeout(timer);
}

export async function startPebble(o: PebbleOptions): Promise<Pebble> {
  const listenIp = o.listenIp ?? "127.0.0.1";
  const acmePort = o.acmePort ?? 14000;
  const managementPort = o.managementPort ?? 15000;
  const dnsPort = o.dnsPort ?? 8053;
  const dnsManagementPort = o.dnsManagementPort ?? 8055;
  const timeoutMs = o.startTimeoutMs ?? 15_000;
  const dir = mkdtempSync(join(tmpdir(), "halb-pebble-"));
  const procs: ChildProcess[] = [];
  const stop = async () => {
    for (const p of procs.reverse()) await stopProcess(p);
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const tls = makeTls(dir, listenIp);
    const config = {
      pebble: {
        listenAddress: `${listenIp}:${acmePort}`,
        managementListenAddress: `${listenIp}:${managementPort}`,
        certificate: tls.certFile,
        privateKey: tls.keyFile,
        httpPort: o.httpPort ?? 80,
        tlsPort: 5001,
        ocspResponderURL: "",
        externalAccountBindingRequired: !!o.eab,
        ...(o.eab ? { externalAccountMACKeys: o.eab } : {}),
        ...(o.certificateValiditySeconds ? { certificateValidityPeriod: o.certificateValiditySeconds } : {}),
      },
    };
    writeFileSync(join(dir, "pebble.json"), JSON.stringify(config, null, 2));

    const start = (name: string, cmd: string, args: string[], env: Record<string, string> = {}) => {
      const file = join(dir, `${name}.log`);
      writeFileSync(file, "");
      const out = createWriteStream(file, { flags: "a" });
      const [c, a] = inNs(o.ns, cmd, args);
      const p = spawn(c, a, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, ...env } });
      p.stdout!.pipe(out);
      p.stderr!.pipe(out);
      procs.push(p);
      return { p, file };
    };
    const dns = start("challtestsrv", "pebble-challtestsrv", [
      "-defaultIPv4",
      o.dnsTarget,
      "-defaultIPv6",
      "",
      "-dns01",
      `127.0.0.1:${dnsPort}`,
      "-http01",
      "",
      "-https01",
      "",
      "-tlsalpn01",
      "",
      "-management",
      `127.0.0.1:${dnsManagementPort}`,
    ]);
    await waitFor(dns.p, dns.file, /Creating TCP and UDP DNS-01 challenge server on|Starting management server/, "pebble-challtestsrv", timeoutMs);
    const pebble = start("pebble", "pebble", ["-config", join(dir, "pebble.json"), "-dnsserver", `127.0.0.1:${dnsPort}`], {
      PEBBLE_VA_NOSLEEP: "1",
      PEBBLE_AUTHZREUSE: "0",
    });
    await waitFor(pebble.p, pebble.file, /ACME directory available at/, "pebble", timeoutMs);

    const curl = (args: string[]) => {
      const [c, a] = inNs(o.ns, "curl", ["-sS", "--fail", "--max-time", "10", ...args]);
      return execFileSync(c, a, { encoding: "utf8", timeout: 15_000 });
    };
    return {
      dir,
      directoryUrl: `https://${listenIp}:${acmePort}/dir`,
      caFile: tls.caFile,
      // The management interface uses the same TLS certificate.
      rootPem: () => curl(["--cacert", tls.caFile, `https://${listenIp}:${managementPort}/roots/0`]),
      setA: (host, ip) => {
        curl(["-X", "POST", "-d", JSON.stringify({ host, addresses: [ip] }), `http://127.0.0.1:${dnsManagementPort}/add-a`]);
      },
      clearA: (host) => {
        curl(["-X", "POST", "-d", JSON.stringify({ host }), `http://127.0.0.1:${dnsManagementPort}/clear-a`]);
      },
      log: () => readFileSync(pebble.file, "utf8"),
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}
