/**
 * Reading the fipd config file (YAML or JSON; JSON is YAML) from disk. Kept apart from
 * agent/config.ts so the schema stays free of I/O and importable by the Pulumi stack.
 */
import { readFileSync } from "node:fs";
import { parse as parseYaml, YAMLParseError } from "yaml";
import { ConfigError, parseAgentConfig, type AgentConfig } from "./config.js";

export function loadAgentConfigFile(path: string): AgentConfig {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ConfigError([`cannot read the file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`], path);
  }
  return parseAgentConfigText(text, path);
}

/**
 * The config file's text as the agent reads it; `source` names it in errors. `fipd apply-config`
 * parses the text it is about to write with this, so what it writes is what the agent accepts.
 */
export function parseAgentConfigText(text: string, source: string): AgentConfig {
  let doc: unknown;
  try {
    doc = parseYaml(text, { prettyErrors: true, uniqueKeys: true });
  } catch (e) {
    const pos = e instanceof YAMLParseError && e.linePos ? ` (line ${e.linePos[0].line}, column ${e.linePos[0].col})` : "";
    throw new ConfigError([`not valid YAML or JSON${pos}: ${(e as Error).message.split("\n")[0]}`], source);
  }
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError(["(root): expected a mapping of settings (see the example in docs/operations.md)"], source);
  }
  return parseAgentConfig(doc, source);
}
