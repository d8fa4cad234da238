import { describe, expect, it } from "vitest";
import { createMetrics } from "../agent/metrics.js";

const value = (text: string, name: string): number | undefined => {
  const m = new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "m").exec(text);
  return m ? Number(m[1]) : undefined;
};

describe("fipd's process metrics", () => {
  it("resident memory, CPU seconds, file descriptors, heap, start time and version, under prom-client's default names", async () => {
    const m = createMetrics();
    const first = await m.registry.metrics();
    expect(value(first, "fipd_process_resident_memory_bytes")).toBeGreaterThan(10 * 2 ** 20);
    expect(value(first, "fipd_process_open_fds")).toBeGreaterThan(0);
    expect(value(first, "fipd_process_max_fds")).toBeGreaterThan(0);
    expect(value(first, "fipd_nodejs_heap_size_used_bytes")).toBeGreaterThan(0);
    expect(value(first, "fipd_process_start_time_seconds")).toBeGreaterThan(1.7e9);
    expect(first).toMatch(/^fipd_nodejs_version_info\{version="v\d+/m);
    // The CPU counter counts from its creation, and only grows.
    const cpu0 = value(first, "fipd_process_cpu_seconds_total")!;
    expect(cpu0).toBeGreaterThanOrEqual(0);
    // Busy until this process has used 50 ms more CPU (bounded by 10 s of wall time on a loaded host).
    const start = process.cpuUsage();
    const deadline = Date.now() + 10_000;
    const used = () => {
      const d = process.cpuUsage(start);
      return (d.user + d.system) / 1e6;
    };
    while (used() < 0.05 && Date.now() < deadline);
    expect(used()).toBeGreaterThanOrEqual(0.05);
    const cpu1 = value(await m.registry.metrics(), "fipd_process_cpu_seconds_total")!;
    expect(cpu1 - cpu0).toBeGreaterThanOrEqual(0.05);
    expect(cpu1 - cpu0).toBeLessThan(5);
  });

  it("leaves out the event-loop lag monitor and the GC histogram (a timer and an observer the agent pays for)", async () => {
    const text = await createMetrics().registry.metrics();
    expect(text).not.toContain("fipd_nodejs_eventloop_lag");
    expect(text).not.toContain("fipd_nodejs_gc_duration_seconds");
    expect(text).toContain("fipd_role");
  });
});
