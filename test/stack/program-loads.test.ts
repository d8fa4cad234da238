/**
 * `pulumi up` loads index.ts the way Pulumi's Node.js language host does, as Pulumi.yaml configures
 * it: `node <nodeargs> …/cmd/run` then `require(main)`, with the vendored ts-node registered first when
 * `typescript` is on (as @pulumi/pulumi/cmd/run/run.js does). Without the CLI, the test does that load
 * itself: every module of the program must resolve, so the first error is the stack's own config check.
 */
import { load as parseYaml } from "js-yaml";
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { expect, it } from "vitest";

const root = join(__dirname, "..", "..");

interface ProjectFile {
  main?: string;
  runtime: { name: string; options?: { typescript?: boolean; nodeargs?: string } };
}

it("the program named in Pulumi.yaml loads under the runtime options it sets", () => {
  const project = parseYaml(readFileSync(join(root, "Pulumi.yaml"), "utf8")) as ProjectFile;
  expect(project.runtime.name).toBe("nodejs");
  const main = join(root, project.main ?? "index.js");
  const options = project.runtime.options ?? {};
  // run.js registers ts-node unless `typescript: false`.
  const pulumiDir = dirname(require.resolve("@pulumi/pulumi/package.json"));
  const tsNode = readdirSync(join(pulumiDir, "vendor")).find((d) => d.startsWith("ts-node@"));
  const register =
    options.typescript === false
      ? ""
      : `require(${JSON.stringify(join(pulumiDir, "vendor", tsNode!))}).register({ transpileOnly: true, compiler: require.resolve("typescript") });`;
  const load = `${register} try { require(${JSON.stringify(main)}); } catch (e) { process.stdout.write(String(e && e.message)); process.exit(3); }`;
  const nodeArgs = (options.nodeargs ?? "").split(/\s+/).filter(Boolean);
  const r = spawnSync(process.execPath, [...nodeArgs, "-e", load], {
    cwd: root,
    encoding: "utf8",
    timeout: 60_000,
    env: { ...process.env, PULUMI_CONFIG: "{}" },
  });
  expect(r.status, r.stderr).toBe(3);
  // Every import resolved: what stops the program is the stack config that this test does not set.
  expect(r.stdout).not.toMatch(/Cannot find module/);
  expect(r.stdout).toMatch(/^invalid stack configuration:/);
});
