/**
 * The witness: votes (Election answers vote requests for every role), follows the leader and hears
 * releases like a follower, and never stands. A process that boots as a witness stays one.
 */
import { followHeartbeat, onRelease } from "./follower.js";
import type { RoleStep } from "./role.js";

export const witnessStep: RoleStep = {
  kind: "witness",
  role: "witness",
  tick() {},
  message(e, m) {
    if (m.kind === "heartbeat") followHeartbeat(e, m);
    else if (m.kind === "release") onRelease(e, m);
  },
  local() {},
  wakeAtMs: () => Infinity,
};
