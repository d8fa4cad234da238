/** A throwaway test CA and server certificates, made with openssl under /tmp/halb-pki-*. */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface TestPki {
  dir: string;
  /** The CA certificate (PEM). */
  ca: string;
  /** Per host name: a leaf certificate (chain: leaf + CA) and its key. */
  certs: Record<string, { certificate: string; privateKey: string }>;
  cleanup(): void;
}

const openssl = (args: string[], cwd: string) => execFileSync("openssl", args, { cwd, stdio: ["ignore", "pipe", "pipe"], timeout: 20_000 });

/** A CA and one certificate per host name (SAN = the name), valid for `days` from now. */
export function makePki(hosts: string[], days = 30): TestPki {
  const dir = mkdtempSync(join(tmpdir(), "halb-pki-"));
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"];
  openssl(["req", "-x509", ...ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", String(days), "-subj", "/CN=ha-lb test CA"], dir);
  const ca = readFileSync(join(dir, "ca.pem"), "utf8");
  const certs: TestPki["certs"] = {};
  for (const host of hosts) {
    writeFileSync(join(dir, `${host}.ext`), `subjectAltName=DNS:${host}\nbasicConstraints=CA:FALSE\n`);
    openssl(["req", ...ec, "-keyout", `${host}.key`, "-out", `${host}.csr`, "-subj", `/CN=${host}`], dir);
    openssl(
      [
        "x509",
        "-req",
        "-in",
        `${host}.csr`,
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        `${host}.crt`,
        "-days",
        String(days),
        "-extfile",
        `${host}.ext`,
      ],
      dir,
    );
    certs[host] = { certificate: readFileSync(join(dir, `${host}.crt`), "utf8") + ca, privateKey: readFileSync(join(dir, `${host}.key`), "utf8") };
  }
  return { dir, ca, certs, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}
