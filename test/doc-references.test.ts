/**
 * Every document the agent and the stack point an operator to exists: an error message once sent
 * readers to an operations guide under docs/ that was never written.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join, relative } from "node:path";
import { describe, expect, it } from "vitest";

const ROOT = join(__dirname, "..");

/** The files under `dir` (relative to the repository), at most `max` of them. */
function filesUnder(dir: string, max = 2_000): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      if (out.length >= max) return;
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out.push(relative(ROOT, p));
    }
  };
  walk(join(ROOT, dir));
  return out;
}

/** README's section anchors as GitHub makes them: lower case, spaces to dashes, punctuation dropped. */
const readmeAnchors = new Set(
  readFileSync(join(ROOT, "README.md"), "utf8")
    .split("\n")
    .filter((l) => /^#{1,6} /.test(l))
    .map((l) =>
      l
        .replace(/^#+ /, "")
        .toLowerCase()
        .replace(/[^\p{L}\p{N} _-]/gu, "")
        .replace(/ /g, "-"),
    ),
);

const sources = [...filesUnder("agent"), ...filesUnder("components")].filter((f) => /\.(ts|service|ya?ml|sh|md)$/.test(f));

describe("documents referred to by the agent and the stack", () => {
  it("scans the sources", () => {
    expect(sources).toContain("agent/cli.ts");
    expect(sources).toContain("components/assets/fipd.service");
  });

  it.each(sources)("%s: every docs/ path exists, every README anchor is a section", (file) => {
    const text = readFileSync(join(ROOT, file), "utf8");
    const missing = [...text.matchAll(/\bdocs\/[A-Za-z0-9_.\/-]*[A-Za-z0-9_]/g)].map((m) => m[0]).filter((p) => !existsSync(join(ROOT, p)));
    const anchors = [...text.matchAll(/(?:README\.md|github\.com\/ha-lb\/ha-lb)#([a-z0-9_-]+)/g)].map((m) => m[1]).filter((a) => !readmeAnchors.has(a));
    expect({ missing, anchors }).toEqual({ missing: [], anchors: [] });
  });
});
