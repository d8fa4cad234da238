/**
 * The droplet metadata service (http://169.254.169.254): free, local, no token. fipd reads its
 * identity and "is the reserved IP on me?" here, and keeps the rate-limited API for writes.
 */
import { HttpGetError, httpGet, type GetResult } from "./http-get.js";

export interface MetadataClient {
  dropletId(): Promise<number>;
  region(): Promise<string>;
  anchorIpv4(): Promise<string>;
  reservedIpv4(): Promise<{ active: boolean; ipAddress: string | null }>;
}

export function createMetadataClient(o: { baseUrl: string; timeoutMs: number }): MetadataClient {
  const base = o.baseUrl.replace(/\/+$/, "");
  const get = async (path: string, optional = false): Promise<string | null> => {
    const url = `${base}/metadata/v1/${path}`;
    let res: GetResult;
    try {
      // 64 KiB at most: every answer here is a short line; a larger one is refused, not read.
      res = await httpGet(url, o.timeoutMs, "error");
    } catch (e) {
      throw new Error(`metadata ${url}: ${e instanceof HttpGetError ? e.reason : (e as Error).message}`);
    }
    if (res.status === 404 && optional) return null;
    if (res.status < 200 || res.status > 299) throw new Error(`metadata ${url}: HTTP ${res.status}`);
    return res.body.trim();
  };
  return {
    async dropletId() {
      const t = (await get("id"))!;
      const id = Number(t);
      if (!Number.isInteger(id) || id <= 0) throw new Error(`metadata id is not a droplet ID: ${JSON.stringify(t.slice(0, 40))}`);
      return id;
    },
    region: async () => (await get("region"))!,
    async anchorIpv4() {
      const a = (await get("interfaces/public/0/anchor_ipv4/address"))!;
      if (!/^\d+\.\d+\.\d+\.\d+$/.test(a))
        throw new Error(`metadata anchor_ipv4 is not an IPv4 address: ${JSON.stringify(a.slice(0, 40))} (droplets from custom images have none)`);
      return a;
    },
    async reservedIpv4() {
      // reserved_ip first; the legacy floating_ip path as a fallback.
      let active = await get("reserved_ip/ipv4/active", true);
      let prefix = "reserved_ip";
      if (active === null) {
        active = await get("floating_ip/ipv4/active", true);
        prefix = "floating_ip";
      }
      if (active !== "true") return { active: false, ipAddress: null };
      return { active: true, ipAddress: await get(`${prefix}/ipv4/ip_address`, true) };
    },
  };
}
