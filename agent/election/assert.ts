/**
 * Assertions of the election core (TIGER_STYLE): a broken pre- or postcondition throws, and the shell
 * (agent/shell.ts) turns any throw from the core into fail-stop (exit 70, one log line; systemd
 * restarts the agent, and the boot quiet period covers the promises it made). Nothing a peer sends can
 * reach an assertion: messages are validated at the boundary (agent/messages.ts) and the core answers
 * every valid one; an assertion that fires is a bug in the core.
 */
export class ElectionAssertionError extends Error {
  override name = "ElectionAssertionError";
}

/** Throws `ElectionAssertionError` with `what` (the condition that should hold, and where) unless `condition`. */
export function assert(condition: unknown, what: string): asserts condition {
  if (!condition) throw new ElectionAssertionError(`election core: assertion failed: ${what}`);
}
