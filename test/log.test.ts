/** The agent's logger: redaction, the per-message rate limit (with a fake clock), and the level set on reload. */
import { describe, expect, it } from "vitest";
import { LOG_BURST, LOG_WINDOW_MS, createLogger, type Level } from "../agent/log.js";

function capture(level: Level = "info") {
  let now = 1_000;
  const lines: Array<Record<string, unknown>> = [];
  const log = createLogger({ level, nodeId: "lb-1", write: (l) => lines.push(JSON.parse(l) as Record<string, unknown>), nowMs: () => now });
  return { log, lines, advance: (ms: number) => (now += ms), msgs: () => lines.map((l) => l.msg) };
}

describe("logger", () => {
  it("writes one JSON line per call with level, syslog priority and node, and redacts secrets", () => {
    const { log, lines } = capture();
    log.child({ part: "ip" }).warn("assign failed", { token: "dop_v1_x", error: `bad dop_v1_${"ab".repeat(16)} here` });
    expect(lines).toEqual([
      { ts: expect.any(String), level: "warn", PRIORITY: 4, node: "lb-1", msg: "assign failed", part: "ip", token: "[redacted]", error: "bad [redacted] here" },
    ]);
  });

  it(`writes the first ${LOG_BURST} lines of a message per window, then one summary of the rest when the window ends`, () => {
    const { log, lines, advance, msgs } = capture();
    for (let i = 0; i < 38_446; i++) log.error("peer message handler failed", { error: `stack ${i}` });
    log.error("another message");
    expect(msgs()).toEqual([...Array<string>(LOG_BURST).fill("peer message handler failed"), "another message"]);
    advance(LOG_WINDOW_MS - 1);
    log.error("peer message handler failed");
    expect(lines).toHaveLength(LOG_BURST + 1);
    advance(1);
    log.error("peer message handler failed", { error: "after" });
    expect(lines.slice(LOG_BURST + 1)).toEqual([
      expect.objectContaining({
        level: "error",
        msg: `suppressed ${38_446 - LOG_BURST + 1} lines like this one in ${LOG_WINDOW_MS / 1000} s`,
        like: "peer message handler failed",
      }),
      expect.objectContaining({ level: "error", msg: "peer message handler failed", error: "after" }),
    ]);
  });

  it("writes the summary when the window ends even if nothing else is logged (the timer's flush)", () => {
    const { log, advance, msgs } = capture();
    for (let i = 0; i < LOG_BURST + 3; i++) log.warn("dropped");
    advance(LOG_WINDOW_MS);
    log.flushSuppressed();
    expect(msgs().slice(LOG_BURST)).toEqual([`suppressed 3 lines like this one in ${LOG_WINDOW_MS / 1000} s`]);
    log.flushSuppressed();
    expect(msgs()).toHaveLength(LOG_BURST + 1);
  });

  it("never suppresses crit lines", () => {
    const { log, msgs } = capture();
    for (let i = 0; i < 100; i++) log.crit("durable write failed; exiting");
    expect(msgs()).toHaveLength(100);
  });

  it("applies a new level to the root and every child at once", () => {
    const { log, msgs } = capture("warn");
    const child = log.child({ part: "transport" });
    child.info("hidden");
    log.setLevel("debug");
    child.debug("shown");
    log.setLevel("error");
    child.warn("hidden too");
    log.crit("always");
    expect(msgs()).toEqual(["shown", "always"]);
  });
});
