/**
 * Bundle fipd into one file, dist/fipd.cjs, for Node 20: no native modules, no node_modules on the
 * droplet. The Pulumi stack calls `buildAgentBundle()` and deploys the result by content hash.
 */
import { build, type Plugin } from "esbuild";
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";

export interface AgentBundle {
  path: string;
  bytes: number;
  sha256: string;
}

const root = resolve(__dirname, "..");

/**
 * zod re-exports all of its ~50 message locales as a namespace (`z.locales`), which no bundler can
 * tree-shake: a third of the bundle. fipd speaks English only (the default locale, which zod loads
 * from locales/en.js directly), so the namespace is reduced to `en`.
 */
const zodEnglishOnly: Plugin = {
  name: "zod-english-only",
  setup(b) {
    // A relative virtual path: the bundle must not embed this checkout's location (its hash would
    // differ between machines, and every deploy from another one would roll the agents).
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (a) =>
      /[\\/]node_modules[\\/]zod[\\/]/.test(a.importer)
        ? { path: "locales-en-only", namespace: "zod-locales", pluginData: { dir: resolve(a.resolveDir, "..", "locales") } }
        : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: "zod-locales" }, (a) => ({
      contents: `export { default as en } from "./en.js";`,
      resolveDir: (a.pluginData as { dir: string }).dir,
      loader: "js",
    }));
  },
};

export async function buildAgentBundle(outFile = join(root, "dist", "fipd.cjs")): Promise<AgentBundle> {
  mkdirSync(resolve(outFile, ".."), { recursive: true });
  const version = (JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as { version: string }).version;
  await build({
    entryPoints: [join(root, "agent", "main.ts")],
    outfile: outFile,
    bundle: true,
    platform: "node",
    target: "node20",
    format: "cjs",
    minifySyntax: true,
    legalComments: "inline",
    sourcemap: false,
    define: { FIPD_VERSION: JSON.stringify(version) },
    banner: { js: "#!/usr/bin/env node" },
    logLevel: "warning",
    plugins: [zodEnglishOnly],
  });
  const content = readFileSync(outFile);
  return { path: outFile, bytes: content.length, sha256: createHash("sha256").update(content).digest("hex") };
}

if (require.main === module) {
  buildAgentBundle().then(
    (b) => console.log(`built ${b.path}: ${(b.bytes / 1024).toFixed(1)} KiB, sha256 ${b.sha256.slice(0, 16)}…`),
    (e) => {
      console.error(`bundle failed: ${(e as Error).message}`);
      process.exit(1);
    },
  );
}
