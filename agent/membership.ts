/**
 * The one rule for accepting a new member list over the one an agent runs, used on reload
 * (controller.ts, SIGHUP and `fipd reload`) and by `fipd apply-config` before it writes anything.
 *
 * The membership version orders member lists: a node that sees a higher version treats that list as
 * the newer one and goes through joint consensus to it (agent/election). A lower version would make
 * the nodes treat the newer list as the older one; the same version with other members would swap
 * the list with no joint consensus at all. Both are refused, so a stale or misordered deploy fails
 * loudly instead of splitting the cluster.
 */

export interface MembershipView {
  readonly version: number;
  readonly memberIds: readonly string[];
}

const sameIds = (a: readonly string[], b: readonly string[]) => [...a].sort().join(",") === [...b].sort().join(",");

/**
 * Why `next` must not replace `running` (`where` says whose `running` is, e.g. "the running agent's"),
 * or null when it may.
 */
export function membershipRefusal(next: MembershipView, running: MembershipView, where: string): string | null {
  if (next.version < running.version) {
    return `membershipVersion ${next.version} is lower than ${running.version}, ${where} version: refusing an older member list (membership versions only go up; the stack raises them by one per membership change)`;
  }
  if (next.version === running.version && !sameIds(next.memberIds, running.memberIds)) {
    return `the member list changed (${[...next.memberIds].join(", ")} instead of ${[...running.memberIds].join(", ")}) but membershipVersion stayed ${next.version}, ${where} version: refusing it (a new member list needs a higher version, or the nodes would skip joint consensus)`;
  }
  return null;
}
