/** A peer key roll under mocks (issue 17.2): the deploy's final check runs again and prints when the old key was retired. */
import { describe, expect, it } from "vitest";
import { BASE_CONFIG, runProgram, unwrap } from "./harness.js";

describe("peer key roll", () => {
  it("raising peerKeyGeneration alone runs the final check again (its triggers change), which prints the peer key line", async () => {
    const a = await runProgram(BASE_CONFIG);
    const b = await runProgram({ ...BASE_CONFIG, "ha-lb:peerKeyGeneration": "2" });
    const check = (r: typeof a) => r.resources.find((x) => x.name.endsWith("-switch-check"))!;
    expect(unwrap(check(b).inputs.triggers)).not.toEqual(unwrap(check(a).inputs.triggers));
    expect(check(b).inputs.create).toBe(check(a).inputs.create);
    expect(check(b).inputs.create).toContain("grep '^previous peer key '");
  });
});
