/**
 * A build id: the first 16 hex digits of the agent bundle's SHA-256. Agents report it in their status
 * messages and in `fipd status`; the deploy scripts and `fipd handover --prefer-build` name builds by it.
 */
export const BUILD_ID = /^[0-9a-f]{16}$/;
export const buildId = (sha256Hex: string): string => sha256Hex.slice(0, 16);
