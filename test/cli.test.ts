/** `fipd`'s argument checks (agent/cli.ts): each bad argument gets its own precise message. */
import { describe, expect, it } from "vitest";
import { main } from "../agent/cli.js";

describe("fipd status --timeout", () => {
  it.each([
    [["--timeout", "-1"], "--timeout: expected a positive number of seconds, got -1"],
    [["--timeout=-1"], "--timeout: expected a positive number of seconds, got -1"],
    [["--timeout", "-.5"], "--timeout: expected a positive number of seconds, got -.5"],
    [["--timeout", "0"], "--timeout: expected a positive number of seconds, got 0"],
    [["--timeout", "soon"], "--timeout: expected a positive number of seconds, got soon"],
    [["--timeout="], "--timeout: expected a positive number of seconds, got nothing"],
  ])("status --wait-healthy %j: %s", async (args, message) => {
    await expect(main(["status", "--wait-healthy", ...args])).rejects.toThrow(message);
  });

  it("--timeout without --wait-healthy is refused rather than ignored", async () => {
    await expect(main(["status", "--timeout", "5"])).rejects.toThrow("--timeout applies only with --wait-healthy");
  });
});
