/**
 * When a key roll is over, the previous identities are retired: this node's previous identity is no
 * longer used to answer, and every member's previous public key is no longer accepted. Pure (the
 * clock is passed in); the transport (agent/transport.ts) feeds it and logs.
 *
 * A roll gives every member a new identity at once (the stack's `peerKeyGeneration`). The rule:
 * per member, whether an authenticated packet from it was signed with its current identity (the
 * publicKey our config lists for it). A member does that only once it has the new config, so once
 * every member of the current list has, every member holds every new public key and nobody needs a
 * previous identity: they are dropped for the life of this process (a reload that brings the same
 * pair of own keys back does not bring them back). A member that never confirms (down, or stuck on
 * the old config) keeps the previous identities accepted, and `fipd status` names it; removing the
 * member from the list, or its return with the new config, ends the wait. Nothing here is timed: a
 * time bound would cut off a member that is only late, i.e. split the cluster. A confirmation is not
 * undone by a later packet signed with a previous identity: whoever holds a leaked previous key could
 * otherwise keep it accepted forever.
 *
 * A restarted agent starts with both identities again and retires the previous ones as soon as
 * every member has been heard from (one heartbeat when all are up); an agent that came back after
 * the roll, configured with the new identities only, has nothing to retire.
 */
/** This node's own identities (agent/identity.ts), or anything with an id (the tests). */
export interface PeerKeys<K extends { id: string } = { id: string }> {
  current: K;
  previous: K | null;
}

/** What `fipd status` reports about the peer keys (ids only: an id is public, a key never leaves). */
export interface PeerKeyStatus {
  /** Id of this agent's own identity, the one it signs with. */
  current: string;
  /** Id of its previous identity while previous identities are still accepted, else null. */
  previous: string | null;
  /** While previous identities are accepted: the members not yet seen signing with their current one. */
  waitingFor: string[];
  /** This agent's previous identity, retired with every member's previous one, and when (ISO 8601, UTC). */
  retired: { keyId: string; at: string } | null;
}

export interface Retirement {
  keyId: string;
  current: string;
  atMs: number;
}

export class KeyRetirement<K extends { id: string } = { id: string }> {
  private keys: PeerKeys<K>;
  private members: Set<string>;
  /** The members seen signing with the current key. Only members' ids: bounded by the list. */
  private readonly confirmed = new Set<string>();
  private retired: Retirement | null = null;

  constructor(
    keys: PeerKeys<K>,
    members: Iterable<string>,
    private readonly nowMs: () => number,
  ) {
    this.keys = keys;
    this.members = new Set(members);
  }

  /** Own identities to answer with: the previous one only until the roll is over. */
  accepted(): PeerKeys<K> {
    return this.isRetired() ? { current: this.keys.current, previous: null } : this.keys;
  }

  /** The previous identities are still accepted (a roll in progress, not yet over). */
  rolling(): boolean {
    return this.accepted().previous !== null;
  }

  /**
   * An authenticated packet from `member`, signed with its current identity (`current`) or its
   * previous one. Returns the retirement if this completed it.
   */
  signed(member: string, current: boolean): Retirement | null {
    if (!this.members.has(member) || !current) return null;
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
   * New own identities (a reload). The same pair as now keeps a retirement: the deploy keeps
   * shipping the previous identities after the roll, and a reload must not revive them. Another
   * pair is another roll.
   */
  setKeys(next: PeerKeys<K>): void {
    const sameCurrent = next.current.id === this.keys.current.id;
    const same = sameCurrent && (next.previous?.id ?? null) === (this.keys.previous?.id ?? null);
    this.keys = next;
    if (!same) this.retired = null;
    // A confirmation is of one roll: a new current identity waits for every member again.
    if (!sameCurrent) this.confirmed.clear();
  }

  /** The id of this node's retired previous identity; else null. */
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
