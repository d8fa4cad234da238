/**
 * Bundle fipd into one file, dist/fipd.cjs, for Node 20: no native modules, no node_modules on the
 * droplet. The Pulumi stack calls `buildAgentBundle()` and deploys the result by content hash.
 */
import { build, type BuildOptions } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

export interface AgentBundle {
  path: string;
  bytes: number;
  sha256: string;
}

const root = resolve(__dirname, "..");

/** One bundle for Node 20: everything inlined (no node_modules on the droplet), CommonJS, syntax minified. */
async function bundle(entry: string, outFile: string, extra: Pick<BuildOptions, "define" | "banner"> = {}): Promise<AgentBundle> {
  mkdirSync(resolve(outFile, ".."), { recursive: true });
  await build({
    entryPoints: [entry],
    outfile: outFile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    minifySyntax: true,
    legalComments: "inline",
    sourcemap: false,
    logLevel: "warning",
    ...extra,
  });
  const content = readFileSync(outFile);
  return { path: outFile, bytes: content.length, sha256: createHash("sha256").update(content).digest("hex") };
}

export async function buildAgentBundle(outFile = join(root, "dist", "fipd.cjs")): Promise<AgentBundle> {
  const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
  return bundle(join(root, "agent", "main.ts"), outFile, {
    // `__SIM__: false` compiles the simulator-only code out of the election core (the planted bugs
    // and probe(), see agent/election/sim-only.ts); minifySyntax folds the branches and drops them.
    define: { FIPD_VERSION: JSON.stringify(version), __SIM__: "false" },
    banner: { js: "#!/usr/bin/env node" },
  });
}

/**
 * The ACME child, dist/fipd-acme.cjs (agent/acme/child.ts): acme-client and its dependencies, kept
 * out of fipd's bundle (about 1 MB of code and 29 MB of memory), run by the leader only while an
 * order is due. Deployed beside fipd.cjs.
 */
export async function buildAcmeBundle(outFile = join(root, "dist", "fipd-acme.cjs")): Promise<AgentBundle> {
  return bundle(join(root, "agent", "acme", "child.ts"), outFile);
}

if (require.main === module) {
  Promise.all([buildAgentBundle(), buildAcmeBundle()]).then(
    (bs) => bs.forEach((b) => console.log(`built ${b.path}: ${(b.bytes / 1024).toFixed(1)} KiB, sha256 ${b.sha256.slice(0, 16)}…`)),
    (e) => {
      console.error(`bundle failed: ${(e as Error).message}`);
      process.exit(1);
    },
  );
}
