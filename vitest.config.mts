import { defineConfig } from "vitest/config";

/**
 * Two groups. `unit` runs files in parallel (pure code, mocks, the simulator). `serial` runs files one
 * at a time, after `unit`: real fipd processes, HAProxy and network namespaces, whose timing a busy
 * two-core machine would otherwise disturb.
 */
const serial = ["test/process/**/*.test.ts", "test/e2e/**/*.test.ts", "test/demo/**/*.test.ts"];

export default defineConfig({
  test: {
    reporters: ["default", ["json", { outputFile: ".tmp/vitest-report.json" }]],
    projects: [
      {
        extends: true,
        test: {
          name: "unit",
          maxWorkers: 2,
          // A test asserts behaviour, not speed (benchmarks do that): the first test of a file that loads
          // the Pulumi SDK can take several seconds on a busy two-core machine.
          testTimeout: 30_000,
          hookTimeout: 60_000,
          include: ["test/**/*.test.ts", "agent/**/*.test.ts", "components/**/*.test.ts"],
          exclude: serial,
          sequence: { groupOrder: 0 },
        },
      },
      {
        extends: true,
        test: { name: "serial", include: serial, fileParallelism: false, testTimeout: 120_000, hookTimeout: 120_000, sequence: { groupOrder: 1 } },
      },
    ],
  },
});
