import { createSocket, type Socket } from "node:dgram";
import { performance } from "node:perf_hooks";
import { afterEach, describe, expect, it } from "vitest";
import { parseHostPort, startUdpRelay } from "../../testbed/relay.js";

const sockets: Socket[] = [];
const relays: Array<{ close(): Promise<void> }> = [];

afterEach(async () => {
  for (const r of relays.splice(0)) await r.close();
  await Promise.all(sockets.splice(0).map((s) => new Promise<void>((res) => s.close(() => res()))));
});

async function bound(): Promise<Socket> {
  const s = createSocket("udp4");
  sockets.push(s);
  await new Promise<void>((res) => s.bind(0, "127.0.0.1", () => res()));
  return s;
}

/** A UDP echo server on 127.0.0.1; counts what it received. */
async function echoServer(): Promise<{ port: number; received: () => number }> {
  const s = await bound();
  let n = 0;
  s.on("message", (m, r) => {
    n++;
    s.send(m, r.port, r.address);
  });
  return { port: s.address().port, received: () => n };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Open UDP handles, once libuv has run its close callbacks for the ones already closed. */
const udpHandles = async () => {
  await new Promise((r) => setImmediate(() => setImmediate(r)));
  return udpHandlesNow();
};
const udpHandlesNow = () => process.getActiveResourcesInfo().filter((r) => r === "UDPWrap").length;

describe("startUdpRelay", () => {
  it("delays both legs: delay 50 ms, no jitter → round trip ≥ 100 ms and < 1000 ms", async () => {
    const echo = await echoServer();
    const relay = await startUdpRelay({
      listenAddress: "127.0.0.1",
      listenPort: 0,
      targetAddress: "127.0.0.1",
      targetPort: echo.port,
      delayMs: 50,
      jitterMs: 0,
    });
    relays.push(relay);
    expect(relay.port).toBeGreaterThan(0);
    const client = await bound();
    const got = new Promise<{ msg: string; ms: number; from: number }>((res) =>
      client.once("message", (m, r) => res({ msg: m.toString(), ms: performance.now() - t0, from: r.port })),
    );
    const t0 = performance.now();
    client.send("hello", relay.port, "127.0.0.1");
    const { msg, ms, from } = await got;
    expect(msg).toBe("hello");
    expect(from).toBe(relay.port);
    expect(ms).toBeGreaterThanOrEqual(100);
    expect(ms).toBeLessThan(1000);
    expect(relay.stats()).toEqual({ forwarded: 1, replied: 1, dropped: 0 });
  });

  it("with jitter: no loss, delays spread, each client gets its own replies", async () => {
    const echo = await echoServer();
    // delay per leg uniform in [5, 55) ms
    const relay = await startUdpRelay({
      listenAddress: "127.0.0.1",
      listenPort: 0,
      targetAddress: "127.0.0.1",
      targetPort: echo.port,
      delayMs: 30,
      jitterMs: 25,
    });
    relays.push(relay);
    const clients = [await bound(), await bound()];
    const perClient = 100;
    const sentAt = new Map<string, number>();
    const rtt: number[] = [];
    const order: number[] = [];
    const done = Promise.all(
      clients.map(
        (c, ci) =>
          new Promise<void>((res) => {
            let n = 0;
            c.on("message", (m) => {
              const id = m.toString();
              expect(id.startsWith(`${ci}:`)).toBe(true); // replies go back to the client that sent
              rtt.push(performance.now() - sentAt.get(id)!);
              if (ci === 0) order.push(Number(id.split(":")[1]));
              if (++n === perClient) res();
            });
          }),
      ),
    );
    for (let i = 0; i < perClient; i++) {
      for (const [ci, c] of clients.entries()) {
        const id = `${ci}:${i}`;
        sentAt.set(id, performance.now());
        c.send(id, relay.port, "127.0.0.1");
      }
    }
    await done;
    expect(rtt).toHaveLength(2 * perClient);
    expect(echo.received()).toBe(2 * perClient);
    expect(relay.stats()).toEqual({ forwarded: 2 * perClient, replied: 2 * perClient, dropped: 0 });
    const min = Math.min(...rtt);
    const max = Math.max(...rtt);
    expect(min).toBeGreaterThanOrEqual(10); // two legs of at least 5 ms
    expect(max - min).toBeGreaterThan(30); // the sum of two uniform(5, 55) draws spreads over 100 ms
    expect(max).toBeLessThan(1000);
    expect(order).not.toEqual([...order].sort((a, b) => a - b)); // jitter reorders
  });

  it("clamps the delay at 0 and uses the given random source", async () => {
    const echo = await echoServer();
    const relay = await startUdpRelay({
      listenAddress: "127.0.0.1",
      listenPort: 0,
      targetAddress: "127.0.0.1",
      targetPort: echo.port,
      delayMs: 10,
      jitterMs: 500,
      random: () => 0,
    });
    relays.push(relay);
    const client = await bound();
    const got = new Promise<number>((res) => client.once("message", () => res(performance.now() - t0)));
    const t0 = performance.now();
    client.send("x", relay.port, "127.0.0.1");
    expect(await got).toBeLessThan(200);
  });

  it("drop: a cut client's datagrams and the replies to it are dropped, others pass, and a heal restores it", async () => {
    const echo = await echoServer();
    const cut = new Set<number>();
    const relay = await startUdpRelay({
      listenAddress: "127.0.0.1",
      listenPort: 0,
      targetAddress: "127.0.0.1",
      targetPort: echo.port,
      delayMs: 40,
      jitterMs: 0,
      drop: (c) => cut.has(c.port),
    });
    relays.push(relay);
    const [a, b] = [await bound(), await bound()];
    const heard = { a: [] as string[], b: [] as string[] };
    a.on("message", (m) => heard.a.push(m.toString()));
    b.on("message", (m) => heard.b.push(m.toString()));
    // a is cut: its datagram never reaches the target; b's goes through.
    cut.add(a.address().port);
    a.send("a1", relay.port, "127.0.0.1");
    b.send("b1", relay.port, "127.0.0.1");
    await sleep(200);
    expect(heard).toEqual({ a: [], b: ["b1"] });
    expect(echo.received()).toBe(1);
    // Healed: a's datagram goes through. Cut again while it is on its way: the target gets it,
    // the reply to a is dropped on its way (the relay asks again when a datagram is due).
    cut.clear();
    a.send("a2", relay.port, "127.0.0.1");
    await sleep(60); // past the first leg (40 ms), before the reply's (80 ms)
    cut.add(a.address().port);
    await sleep(200);
    expect(echo.received()).toBe(2);
    expect(heard.a).toEqual([]);
    cut.clear();
    a.send("a3", relay.port, "127.0.0.1");
    await sleep(200);
    expect(heard.a).toEqual(["a3"]);
    expect(relay.stats()).toEqual({ forwarded: 3, replied: 2, dropped: 2 });
  });

  it("close() clears pending datagrams and closes every socket", async () => {
    const before = await udpHandles();
    const echo = await echoServer();
    const client = await bound();
    const relay = await startUdpRelay({
      listenAddress: "127.0.0.1",
      listenPort: 0,
      targetAddress: "127.0.0.1",
      targetPort: echo.port,
      delayMs: 30,
      jitterMs: 0,
    });
    // one round trip so that the per-client socket exists and is bound
    const first = new Promise<void>((res) => client.once("message", () => res()));
    client.send("a", relay.port, "127.0.0.1");
    await first;
    expect(udpHandlesNow()).toBe(before + 4); // echo, client, relay listen, relay per-client
    // a datagram that is still waiting in the relay when it closes
    client.send("b", relay.port, "127.0.0.1");
    await sleep(5);
    await relay.close();
    await relay.close(); // idempotent
    expect(udpHandlesNow()).toBe(before + 2); // close() itself waits for the handles to go
    await sleep(60);
    expect(echo.received()).toBe(1);
    expect(relay.stats()).toEqual({ forwarded: 1, replied: 1, dropped: 0 });
  });

  it("close() right after start, before any datagram", async () => {
    const before = await udpHandles();
    const relay = await startUdpRelay({ listenAddress: "127.0.0.1", listenPort: 0, targetAddress: "127.0.0.1", targetPort: 9, delayMs: 0, jitterMs: 0 });
    await relay.close();
    expect(udpHandlesNow()).toBe(before);
  });

  it("rejects when the listen port is taken", async () => {
    const s = await bound();
    await expect(
      startUdpRelay({ listenAddress: "127.0.0.1", listenPort: s.address().port, targetAddress: "127.0.0.1", targetPort: 9, delayMs: 0, jitterMs: 0 }),
    ).rejects.toThrow(/EADDRINUSE/);
  });
});

describe("parseHostPort", () => {
  it("v4 and bracketed v6", () => {
    expect(parseHostPort("127.0.0.1:7000")).toEqual({ address: "127.0.0.1", port: 7000 });
    expect(parseHostPort("[::1]:0")).toEqual({ address: "::1", port: 0 });
    expect(() => parseHostPort("127.0.0.1")).toThrow();
    expect(() => parseHostPort("h:70000")).toThrow();
  });
});
