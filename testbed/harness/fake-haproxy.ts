/**
 * A stand-in for HAProxy on a droplet, for the demo and the loopback process tests where no real
 * HAProxy runs: its local health endpoint (`monitor-uri`, /healthz) and its frontend, which answers a
 * client with the name of the droplet that served it. `setHealthy(false)` makes both answer 503, as
 * HAProxy does when no backend is usable (`monitor fail`); `close()` is HAProxy stopped.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeHealthEndpoint {
  /** The health endpoint the agent polls. */
  url: string;
  /** The frontend: what a client reaches through the Reserved IP while this droplet holds it. */
  trafficUrl: string;
  setHealthy(ok: boolean): void;
  isHealthy(): boolean;
  close(): Promise<void>;
}

export async function startFakeHealthEndpoint(host = "127.0.0.1", name = "haproxy"): Promise<FakeHealthEndpoint> {
  let healthy = true;
  const server: Server = createServer((req, res) => {
    const health = (req.url ?? "/").split("?")[0] === "/healthz";
    res.writeHead(healthy ? 200 : 503, { "content-type": "text/plain", connection: "close" });
    res.end(healthy ? (health ? "ok\n" : `${name}\n`) : "no backend\n");
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}/healthz`,
    trafficUrl: `http://${host}:${port}/`,
    setHealthy: (ok) => {
      healthy = ok;
    },
    isHealthy: () => healthy,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
