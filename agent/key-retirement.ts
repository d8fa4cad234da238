/**
 * When a key roll is over, the previous peer key is retired: no longer accepted, no longer used to
 * answer. Pure (the clock is passed in); the transport (agent/transport.ts) feeds it and logs.
 *
 * The rule: per member, whether an authenticated packet from it was signed with our current key.
 * Once every member of the current list has been seen doing so, every member holds it, so nobody
 * needs the previous one: it is dropped for the life of this process (a reload that
 * brings the same pair of keys back does not bring it back). A member that never confirms (down,
 * or stuck on the old config) keeps the previous key accepted, and `fipd status` names it; removing
 * the member from the list, or its return with the new key, ends the wait. Nothing here is timed: a
 * time bound would cut off a member that is only late, i.e. split the cluster. A confirmation is
 * not undone by a later packet signed with the previous key: whoever holds a leaked previous key
 * could otherwise sign as a member forever and so keep the key it stole accepted.
 *
 * A member that signs with our current key has it, whether as its own current key or as its
 * previous one (a member already one roll ahead answers us with the key we announce), so either way
 * it no longer needs our previous key. A restarted agent starts with both keys again and retires
 * the previous one as soon as every member has been heard from (one heartbeat when all are up); an
 * agent that came back after the roll, configured with the new key only, has nothing to retire.
 */
import type { PeerKey } from "./secrets.js";

export interface PeerKeys {
  current: PeerKey;
  previous: PeerKey | null;
}

/** What `fipd status` reports about the peer keys (ids only: an id is public, a key never leaves). */
export interface PeerKeyStatus {
  /** Id of the key this agent signs with. */
  current: string;
  /** Id of the previous key while it is still accepted, else null. */
  previous: string | null;
  /** While the previous key is accepted: the members not yet seen signing with the current key. */
  waitingFor: string[];
  /** The previous key this agent stopped accepting, and when (ISO 8601, UTC). */
  retired: { keyId: string; at: string } | null;
}

export interface Retirement {
  keyId: string;
  current: string;
  atMs: number;
}

export class KeyRetirement {
  private keys: PeerKeys;
  private members: Set<string>;
  /** The members seen signing with the current key. Only members' ids: bounded by the list. */
  private readonly confirmed = new Set<string>();
  private retired: Retirement | null = null;

  constructor(
    keys: PeerKeys,
    members: Iterable<string>,
    private readonly nowMs: () => number,
  ) {
    this.keys = keys;
    this.members = new Set(members);
  }

  /** The keys to accept and answer with: the previous one only until it is retired. */
  accepted(): PeerKeys {
    return this.isRetired() ? { current: this.keys.current, previous: null } : this.keys;
  }

  /** An authenticated packet from `member` was signed with `keyId`. Returns the retirement if this completed it. */
  signed(member: string, keyId: string): Retirement | null {
    if (!this.members.has(member) || keyId !== this.keys.current.id) return null;
    this.confirmed.add(member);
    return this.check();
  }

  /** The member list changed: forget who left; a member that left no longer holds the previous key accepted. */
  setMembers(members: Iterable<string>): Retirement | null {
    this.members = new Set(members);
    for (const id of [...this.confirmed]) if (!this.members.has(id)) this.confirmed.delete(id);
    return this.check();
  }

  /**
   * New keys (a reload). The same pair as now keeps a retirement: the deploy keeps shipping the
   * previous key after the roll, and a reload must not revive it. Another pair is another roll.
   */
  setKeys(next: PeerKeys): void {
    const sameCurrent = next.current.id === this.keys.current.id;
    const same = sameCurrent && (next.previous?.id ?? null) === (this.keys.previous?.id ?? null);
    this.keys = next;
    if (!same) this.retired = null;
    // A confirmation is of one key: a new current key waits for every member again.
    if (!sameCurrent) this.confirmed.clear();
  }

  /** The id of the retired previous key, whose packets are now dropped as `retired-key`; else null. */
  retiredKeyId(): string | null {
    return this.isRetired() ? this.retired!.keyId : null;
  }

  waitingFor(): string[] {
    return [...this.members].filter((id) => !this.confirmed.has(id)).sort();
  }

  status(): PeerKeyStatus {
    const accepted = this.accepted();
    return {
      current: this.keys.current.id,
      previous: accepted.previous?.id ?? null,
      waitingFor: accepted.previous ? this.waitingFor() : [],
      retired: this.isRetired() ? { keyId: this.retired!.keyId, at: new Date(this.retired!.atMs).toISOString() } : null,
    };
  }

  private isRetired(): boolean {
    return this.retired !== null && this.keys.previous !== null && this.retired.keyId === this.keys.previous.id;
  }

  private check(): Retirement | null {
    // No member, nobody to confirm: an empty list is a transport not yet told its peers, not a roll that is over.
    if (!this.keys.previous || this.isRetired() || this.members.size === 0 || this.waitingFor().length > 0) return null;
    this.retired = { keyId: this.keys.previous.id, current: this.keys.current.id, atMs: this.nowMs() };
    return this.retired;
  }
}
