/**
 * `npm run bench:readme`: copy the latest bench/results/{failover,soak}.md into the README, between
 * the `<!-- bench:NAME -->` markers, so the README always shows what the committed code produced.
 */
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { resolve } from "node:path";

const root = resolve(__dirname, "..");
const readmePath = resolve(root, "README.md");
let readme = readFileSync(readmePath, "utf8");
for (const name of ["failover", "soak"]) {
  const file = resolve(root, "bench", "results", `${name}.md`);
  if (!existsSync(file)) {
    console.log(`no ${file}: run npm run bench:${name} first`);
    continue;
  }
  // Drop the file's own top heading; the README has its own; demote the rest by two levels.
  const body = readFileSync(file, "utf8")
    .replace(/^# .*\n+/, "")
    .replace(/^(#{2,4}) /gm, (_, h: string) => `${"#".repeat(Math.min(6, h.length + 2))} `)
    .trim();
  const start = `<!-- bench:${name} -->`;
  const end = `<!-- /bench:${name} -->`;
  const a = readme.indexOf(start);
  const b = readme.indexOf(end);
  if (a < 0 || b < a) throw new Error(`README.md has no ${start} … ${end} markers`);
  readme = `${readme.slice(0, a + start.length)}\n${body}\n${readme.slice(b)}`;
  console.log(`README.md: ${name} results from ${file}`);
}
writeFileSync(readmePath, readme);
