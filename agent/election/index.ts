/** The pure election core: `createElectionNode(config, now)` and its contract (types.ts). */
export { createElectionNode, Election, type ElectionOptions, type PlantedBugs } from "./node.js";
export * from "./types.js";
export { bootQuietMs, leaderLeaseMs, majorityOf } from "./quorum.js";
