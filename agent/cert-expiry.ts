/**
 * Each installed certificate's expiry, for fipd_certificate_expiry_timestamp_seconds: HAProxy's
 * exporter has none. The HAProxy install (components/haproxy.ts) writes the public part of each
 * certificate file of the running set (the chains, never a key) into one directory, 0644, after
 * HAProxy took that set; this reads it at scrape time, so the metric follows rotations.
 *
 * Reads are asynchronous (the election's timers share the event loop) and bounded in file count
 * and size.
 */
import { X509Certificate } from "node:crypto";
import { readdir, readFile, stat } from "node:fs/promises";
import { join } from "node:path";

export const MAX_CERTIFICATE_FILES = 200;
export const MAX_CERTIFICATE_FILE_BYTES = 256 * 1024;
/** `<name>.pem`: the install's file names (a certificate's name, or `ca-<pool>` for a pool's CA). */
const FILE = /^([A-Za-z0-9][A-Za-z0-9._-]{0,99})\.pem$/;
const BLOCK = /-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----/g;

/** One file: its name (without .pem) and either the earliest notAfter of its chain, or why not. */
export type CertificateExpiry = { name: string; notAfterS: number } | { name: string; error: string };

/**
 * The expiries in `dir`. A missing directory is no certificates (a witness, an LB before its
 * first install). Per file: the earliest notAfter in its chain (the leaf's, unless an intermediate
 * or CA expires first: then that breaks the chain first). A directory that cannot be read is one
 * entry named ".".
 */
export async function readCertificateExpiries(dir: string): Promise<CertificateExpiry[]> {
  let names: string[];
  try {
    names = (await readdir(dir)).filter((n) => FILE.test(n)).sort();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return [];
    return [{ name: ".", error: `cannot read the directory ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }];
  }
  const out: CertificateExpiry[] = [];
  for (const file of names.slice(0, MAX_CERTIFICATE_FILES)) {
    const name = FILE.exec(file)![1];
    const path = join(dir, file);
    try {
      const st = await stat(path);
      if (!st.isFile()) throw new Error("not a regular file");
      if (st.size > MAX_CERTIFICATE_FILE_BYTES) throw new Error(`${st.size} bytes, more than the ${MAX_CERTIFICATE_FILE_BYTES} a certificate chain needs`);
      const blocks = (await readFile(path, "utf8")).match(BLOCK) ?? [];
      if (!blocks.length) throw new Error("no PEM certificate (-----BEGIN CERTIFICATE-----) in it");
      const notAfterMs = Math.min(...blocks.map((b) => Date.parse(new X509Certificate(b).validTo)));
      if (!Number.isFinite(notAfterMs)) throw new Error("a certificate's notAfter does not parse");
      out.push({ name, notAfterS: Math.floor(notAfterMs / 1000) });
    } catch (e) {
      out.push({ name, error: `${path}: ${(e as Error).message}` });
    }
  }
  if (names.length > MAX_CERTIFICATE_FILES)
    out.push({ name: ".", error: `${dir} holds ${names.length} certificate files; only the first ${MAX_CERTIFICATE_FILES} are read` });
  return out;
}
