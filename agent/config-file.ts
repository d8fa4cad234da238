/**
 * The fipd config file on disk (YAML; JSON is YAML): reading it, and writing it (`fipd apply-config`
 * writes what the stack sends). Kept apart from agent/config.ts so the schema stays free of I/O and
 * importable by the Pulumi stack. One home for the file's format: the writer and the reader below
 * use the same library and schema, and test/config-file.test.ts proves the one reads what the other
 * writes.
 */
import { closeSync, constants, fstatSync, lstatSync, openSync, readSync, type Stats } from "node:fs";
import { CORE_SCHEMA, dump, load, YAMLException } from "js-yaml";
import { ConfigError, parseAgentConfig, type AgentConfig } from "./config.js";
import { printable, show } from "./schema.js";

/** Far above any real config (a few KiB for dozens of members); a bigger file is not a config. */
export const MAX_CONFIG_BYTES = 256 * 1024;

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** What a file that is not a regular file is, for the message that refuses it. */
function kindOf(st: Stats): string {
  if (st.isFile()) return "a regular file";
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a FIFO (named pipe)";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  if (st.isSymbolicLink()) return "a symbolic link";
  return "an unknown kind of file";
}

/**
 * The file's bytes, at most MAX_CONFIG_BYTES of them. Only a regular file is read: a FIFO would
 * block the reader until some writer comes (opened without blocking here, then refused), and a
 * device such as /dev/zero never ends. The type is taken from the open descriptor (fstat), so a
 * file swapped after a check cannot slip in, and at most MAX_CONFIG_BYTES + 1 bytes are read even
 * when the file grows while it is read.
 */
function readBounded(path: string): Buffer {
  const cannot = (e: unknown) => new ConfigError([`cannot read the file: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`], path);
  const tooBig = (size: string) => new ConfigError([`is ${size} bytes; a config file is at most ${MAX_CONFIG_BYTES} bytes`], path);
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e) {
    throw cannot(e);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new ConfigError([`is ${kindOf(st)}; expected a regular file (a YAML or JSON config file)`], path);
    if (st.size > MAX_CONFIG_BYTES) throw tooBig(String(st.size));
    const buf = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let n = 0;
    try {
      for (let got = -1; got !== 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    } catch (e) {
      throw cannot(e);
    }
    if (n > MAX_CONFIG_BYTES) throw tooBig(`more than ${MAX_CONFIG_BYTES}`);
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}

/** The 1-based number of the first line that is not UTF-8. */
function firstBadUtf8Line(bytes: Uint8Array): number {
  let line = 1;
  for (let start = 0; start <= bytes.length; line++) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    try {
      utf8.decode(bytes.subarray(start, end));
    } catch {
      return line;
    }
    start = end + 1;
  }
  return line;
}

/** 1-based line and column of offset `i` in `text`. */
function lineCol(text: string, i: number): string {
  const before = text.slice(0, i);
  const line = before.split("\n").length;
  return `line ${line}, column ${i - before.lastIndexOf("\n")}`;
}

/**
 * Text to a document: refuses what is not UTF-8 text (a binary file) and what is not YAML, each in
 * one printable line with the place, and never echoes the input.
 */
export function parseConfigText(bytes: Uint8Array, source: string): unknown {
  let text: string;
  try {
    text = utf8.decode(bytes); // also drops a byte order mark
  } catch {
    throw new ConfigError(
      [`is not UTF-8 text (line ${firstBadUtf8Line(bytes)}): a binary file, or text in another encoding?; expected a YAML or JSON config file`],
      source,
    );
  }
  // YAML allows tab, line feed and carriage return among the C0 controls, and no C1 control but NEL.
  const ctl = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u0084\u0086-\u009f]/u.exec(text);
  if (ctl) {
    const code = ctl[0].codePointAt(0)!.toString(16).padStart(4, "0");
    throw new ConfigError(
      [`contains the control character U+${code} (${lineCol(text, ctl.index)}), a binary file?; expected a YAML or JSON config file`],
      source,
    );
  }
  if (!text.trim()) throw new ConfigError(["is empty; expected a mapping of settings such as nodeId and members"], source);
  try {
    // The YAML 1.2 core schema: `yes`, `on` and dates stay strings; a duplicate key is an error.
    return load(text, { schema: CORE_SCHEMA, filename: source });
  } catch (e) {
    if (!(e instanceof YAMLException)) throw e;
    const at = e.mark ? ` (line ${e.mark.line + 1}, column ${e.mark.column + 1})` : "";
    throw new ConfigError([printable(`not valid YAML or JSON${at}: ${e.reason}`)], source);
  }
}

/** The config file's bytes as the agent reads them; `source` names it in errors. */
function agentConfigFromBytes(bytes: Uint8Array, source: string): AgentConfig {
  const doc = parseConfigText(bytes, source);
  if (doc === null || typeof doc !== "object" || Array.isArray(doc)) {
    throw new ConfigError([`(root): must be a mapping of settings such as nodeId and members, got ${show(doc)}`], source);
  }
  return parseAgentConfig(doc, source);
}

/**
 * The control socket's path must be free or hold a socket: fipd replaces a stale socket there at
 * start, so a config naming another file (`/etc/shadow`) is refused before anything touches it.
 * A path this process may not look at (a directory it cannot search) is left to the bind to judge.
 */
export function controlSocketProblem(socketPath: string): string | null {
  let st: Stats;
  try {
    st = lstatSync(socketPath);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOTDIR") return `controlSocket: a parent of ${printable(socketPath)} is not a directory; expected a path in a directory such as /run/fipd`;
    return null;
  }
  if (st.isSocket()) return null;
  return `controlSocket: ${printable(socketPath)} exists and is ${kindOf(st)}, not a socket; fipd never replaces it: remove it or choose another path`;
}

/** The config file as `fipd run` and `fipd check-config` read it: the file, its schema, and the control socket's path. */
export function loadAgentConfigFile(path: string): AgentConfig {
  const cfg = agentConfigFromBytes(readBounded(path), path);
  const socket = controlSocketProblem(cfg.controlSocket);
  if (socket) throw new ConfigError([socket], path);
  return cfg;
}

/**
 * The config file's text as the agent reads it. `fipd apply-config` parses the text it is about to
 * write with this, so what it writes is what the agent accepts.
 */
export function parseAgentConfigText(text: string, source: string): AgentConfig {
  return agentConfigFromBytes(Buffer.from(text, "utf8"), source);
}

/**
 * The file `fipd apply-config` writes. js-yaml's dump schema quotes every string a YAML 1.1 or 1.2
 * reader would take for another type (`'yes'`, `'0x10'`, `'null'`), and `noRefs` spells out a value
 * that appears twice instead of writing an alias.
 */
export function renderAgentConfig(doc: Record<string, unknown>): string {
  return dump(doc, { noRefs: true, lineWidth: -1 });
}
