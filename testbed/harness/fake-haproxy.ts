/**
 * A stand-in for HAProxy's local health endpoint (`monitor-uri`), for the demo and the loopback
 * process tests where no real HAProxy runs. `setHealthy(false)` makes it answer 503, as HAProxy's
 * `monitor fail` does when no backend is usable; `close()` is HAProxy stopped.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";

export interface FakeHealthEndpoint {
  url: string;
  setHealthy(ok: boolean): void;
  close(): Promise<void>;
}

export async function startFakeHealthEndpoint(host = "127.0.0.1"): Promise<FakeHealthEndpoint> {
  let healthy = true;
  const server: Server = createServer((req, res) => {
    res.writeHead(healthy ? 200 : 503, { "content-type": "text/plain", connection: "close" });
    res.end(healthy ? "ok\n" : "no backend\n");
  });
  await new Promise<void>((r) => server.listen(0, host, r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://${host}:${port}/healthz`,
    setHealthy: (ok) => {
      healthy = ok;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
