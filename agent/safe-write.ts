/**
 * The one safe file writer of the agent and its tools: installs a *set* of files (config, secrets,
 * certificates) so that either the whole new set is in place and verified, or the previous set is.
 *
 * Run as root into directories other users must not influence, so it assumes nothing about them:
 * - every directory on the way (its real path) is owned by root (or by this process's user) and not
 *   writable by group or others (an ancestor may be, with the sticky bit, as /tmp is). A path
 *   through a symbolic link is refused. Then nobody else can rename, plant or swap a name in it,
 *   and the checks below stay true while the writer works;
 * - a target that is a symbolic link, not a regular file, or hard-linked elsewhere is refused
 *   (reading or replacing it would act on some other file);
 * - each new file is created under an unpredictable name with O_CREAT|O_EXCL|O_NOFOLLOW and
 *   mode 0600, given its owner, group and mode before it holds a byte, written, fsynced, and
 *   renamed over the target; every directory touched is fsynced after the renames;
 * - the previous contents, mode and owner of every target are kept in memory: if a step fails or
 *   `verify` (e.g. "the running agent accepts the new set", "haproxy -c") throws, the previous set is
 *   put back the same way and files that did not exist are removed.
 *
 * Synchronous system calls: a set is a few small files, and the callers are one-shot commands.
 */
import { randomBytes } from "node:crypto";
import { execFileSync } from "node:child_process";
import {
  closeSync,
  constants as fsConstants,
  fchmodSync,
  fchownSync,
  fstatSync,
  fsyncSync,
  lstatSync,
  mkdirSync,
  openSync,
  readFileSync,
  readlinkSync,
  realpathSync,
  renameSync,
  unlinkSync,
  writeFileSync,
} from "node:fs";
import { basename, dirname, isAbsolute, join, normalize } from "node:path";

/** Config files and certificates, not data: anything larger is a mistake, not something to read into memory. */
export const MAX_FILE_BYTES = 16 * 1024 * 1024;

/** A user or group: a name (looked up in the system's databases) or a numeric id. */
export type Principal = string | number;

export interface FileWrite {
  /** Absolute, normalized path of the file. */
  path: string;
  content: string | Uint8Array;
  /** Permission bits, e.g. 0o600 or 0o640 (no setuid, setgid or sticky bits). */
  mode: number;
  /** Owner; default: this process's user (root when deploying). */
  owner?: Principal;
  /** Group; default: this process's group. */
  group?: Principal;
}

/** Remove the file if it exists (restored if the set is rolled back). */
export interface FileRemoval {
  path: string;
  remove: true;
}

export type FileChange = FileWrite | FileRemoval;

export interface InstallOptions {
  /**
   * Runs once every file of the set is in place (and synced). If it throws, the previous set is
   * restored and its error is rethrown unchanged.
   */
  verify?: () => void | Promise<void>;
}

/** A refusal (unsafe directory, planted link, unknown user) or a failed rollback. */
export class SafeWriteError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "SafeWriteError";
  }
}

function check(cond: boolean, message: string): asserts cond {
  if (!cond) throw new SafeWriteError(message);
}

const errCode = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;
const octal = (mode: number) => (mode & 0o7777).toString(8).padStart(4, "0");
const euid = () => process.geteuid?.() ?? 0;
const egid = () => process.getegid?.() ?? 0;

function getent(db: "passwd" | "group", name: string): string[] | null {
  try {
    const line = execFileSync("getent", [db, name], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"], timeout: 10_000 }).split("\n")[0];
    return line ? line.split(":") : null;
  } catch {
    return null; // getent exits 2 for "no such entry"
  }
}

/** A user's uid and primary gid, or null if there is no such user. */
export function lookupUser(name: string): { uid: number; gid: number } | null {
  const f = getent("passwd", name);
  const uid = Number(f?.[2]);
  const gid = Number(f?.[3]);
  return f && f[0] === name && Number.isInteger(uid) && Number.isInteger(gid) ? { uid, gid } : null;
}

/** A group's gid, or null if there is no such group. */
export function lookupGroup(name: string): number | null {
  const f = getent("group", name);
  const gid = Number(f?.[2]);
  return f && f[0] === name && Number.isInteger(gid) ? gid : null;
}

function resolveUid(p: Principal | undefined, path: string): number {
  if (p === undefined) return euid();
  if (typeof p === "number") {
    check(Number.isInteger(p) && p >= 0, `${path}: owner ${p} is not a user id`);
    return p;
  }
  const u = lookupUser(p);
  check(u !== null, `${path}: owner "${p}" is not a user on this host`);
  return u.uid;
}

function resolveGid(p: Principal | undefined, path: string): number {
  if (p === undefined) return egid();
  if (typeof p === "number") {
    check(Number.isInteger(p) && p >= 0, `${path}: group ${p} is not a group id`);
    return p;
  }
  const g = lookupGroup(p);
  check(g !== null, `${path}: group "${p}" is not a group on this host`);
  return g;
}

/**
 * Refuses a directory that another user could change under us: reached through a symbolic link, or
 * with any directory on its path not owned by root (or this process's user), or writable by group
 * or others (allowed on an ancestor with the sticky bit, as /tmp: others cannot rename our entries).
 */
export function assertSecureDirectory(dir: string): void {
  check(isAbsolute(dir) && normalize(dir) === dir && (dir === "/" || !dir.endsWith("/")), `${dir}: expected an absolute, normalized directory path`);
  let real: string;
  try {
    real = realpathSync(dir);
  } catch (e) {
    throw new SafeWriteError(`cannot use the directory ${dir}: ${errCode(e)}`);
  }
  check(
    real === dir,
    `the directory ${dir} is reached through a symbolic link (it is ${real}); refusing to write there: give the real path, or remove the link after checking who made it`,
  );
  const parts = dir.split("/").filter(Boolean);
  for (let i = 0; i <= parts.length; i++) {
    const p = "/" + parts.slice(0, i).join("/");
    const st = lstatSync(p);
    const last = i === parts.length;
    check(st.isDirectory(), `${p} is not a directory`);
    check(
      st.uid === 0 || st.uid === euid(),
      `the directory ${p} is owned by uid ${st.uid}, not root: that user could plant links or swap files in ${dir}; fix: chown root:root ${p}`,
    );
    const othersMayWrite = (st.mode & 0o022) !== 0;
    const sticky = (st.mode & 0o1000) !== 0;
    check(
      !othersMayWrite || (!last && sticky),
      `the directory ${p} is writable by group or others (mode ${octal(st.mode)}): they could plant links or swap files in ${dir}; fix: chmod go-w ${p}`,
    );
  }
}

/** Creates `dir` (one level, `mode`, owned by this process's user) if it is missing; then asserts it is secure. */
export function ensureSecureDirectory(dir: string, mode: number): void {
  check(Number.isInteger(mode) && mode >= 0 && mode <= 0o755, `${dir}: directory mode ${octal(mode)} must not let group or others write`);
  let exists = true;
  try {
    lstatSync(dir);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw new SafeWriteError(`cannot use the directory ${dir}: ${errCode(e)}`);
    exists = false;
  }
  if (!exists) {
    assertSecureDirectory(dirname(dir));
    mkdirSync(dir, { mode });
    // The umask may have narrowed the mode; the parent is secure, so the name is still ours.
    const fd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
    try {
      fchmodSync(fd, mode);
    } finally {
      closeSync(fd);
    }
    fsyncDirectory(dirname(dir));
  }
  assertSecureDirectory(dir);
}

export function fsyncDirectory(dir: string): void {
  const fd = openSync(dir, fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW);
  try {
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
}

/** What a target held before: restored on rollback. */
interface Previous {
  content: Buffer;
  mode: number;
  uid: number;
  gid: number;
}

function readPrevious(path: string): Previous | null {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new SafeWriteError(`cannot read ${path}: ${errCode(e)}`);
  }
  if (st.isSymbolicLink()) {
    let to = "?";
    try {
      to = readlinkSync(path);
    } catch {
      /* gone meanwhile: the refusal stands */
    }
    throw new SafeWriteError(
      `${path} is a symbolic link (to ${to}); refusing to write through it or to replace it. Check who planted it, remove it, and run again`,
    );
  }
  check(st.isFile(), `${path} exists and is not a regular file; refusing to replace it`);
  check(st.nlink === 1, `${path} has ${st.nlink} hard links (another name shares its contents); refusing to read or replace it`);
  check(st.size <= MAX_FILE_BYTES, `${path} holds ${st.size} bytes, more than the ${MAX_FILE_BYTES} this writer keeps for a rollback`);
  const fd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW | fsConstants.O_NONBLOCK);
  try {
    const fst = fstatSync(fd);
    check(fst.ino === st.ino && fst.dev === st.dev, `${path} changed while it was being read; refusing`);
    return { content: readFileSync(fd), mode: fst.mode & 0o7777, uid: fst.uid, gid: fst.gid };
  } finally {
    closeSync(fd);
  }
}

/**
 * A new file beside `path` under an unpredictable name, created exclusively (never through a link,
 * never an existing file), with its owner and mode set before any content. Returns its name.
 */
export function createStagedFile(path: string, content: Uint8Array, mode: number, uid: number, gid: number): string {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(12).toString("hex")}.tmp`);
  let fd: number;
  try {
    fd = openSync(tmp, fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o600);
  } catch (e) {
    throw new SafeWriteError(
      (e as NodeJS.ErrnoException).code === "EEXIST" || (e as NodeJS.ErrnoException).code === "ELOOP"
        ? `something already exists at the temporary name ${tmp} (a planted file or link?); refusing to write ${path}`
        : `cannot create ${tmp} for ${path}: ${errCode(e)}`,
    );
  }
  try {
    // chown before chmod: chown clears setuid/setgid bits, and the mode must be the last word.
    fchownSync(fd, uid, gid);
    fchmodSync(fd, mode);
    writeFileSync(fd, content);
    fsyncSync(fd);
  } catch (e) {
    closeSync(fd);
    unlinkSync(tmp);
    throw new SafeWriteError(`cannot write ${path} (through ${tmp}): ${errCode(e)}`);
  }
  closeSync(fd);
  return tmp;
}

interface Planned {
  path: string;
  /** null: remove the target. */
  write: { content: Buffer; mode: number; uid: number; gid: number } | null;
  previous: Previous | null;
}

function assertHolds(path: string, want: { content: Buffer; mode: number; uid: number; gid: number } | null, what: string): void {
  let st;
  try {
    st = lstatSync(path);
  } catch (e) {
    check(want === null && (e as NodeJS.ErrnoException).code === "ENOENT", `${what}: ${path} is missing (${errCode(e)})`);
    return;
  }
  check(want !== null, `${what}: ${path} should not exist`);
  check(st.isFile(), `${what}: ${path} is not a regular file`);
  check(
    (st.mode & 0o7777) === want.mode && st.uid === want.uid && st.gid === want.gid && st.size === want.content.length,
    `${what}: ${path} is mode ${octal(st.mode)} ${st.uid}:${st.gid}, ${st.size} bytes; expected mode ${octal(want.mode)} ${want.uid}:${want.gid}, ${want.content.length} bytes`,
  );
}

/** Put one target back as it was (or remove it if it did not exist). */
function restore(p: Planned): void {
  if (p.previous) renameSync(createStagedFile(p.path, p.previous.content, p.previous.mode, p.previous.uid, p.previous.gid), p.path);
  else {
    try {
      unlinkSync(p.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    }
  }
}

/**
 * Installs the set in order (put what others depend on first: secrets before the config naming
 * them), then runs `verify`. All or nothing: on any failure the previous set is restored and the
 * error rethrown; if the restore itself fails, a SafeWriteError says so and names the files.
 */
export async function installFileSet(changes: readonly FileChange[], o: InstallOptions = {}): Promise<void> {
  check(changes.length > 0, "installFileSet: no files given");
  const seen = new Set<string>();
  for (const c of changes) {
    check(isAbsolute(c.path) && normalize(c.path) === c.path && !c.path.endsWith("/"), `${c.path}: expected an absolute, normalized file path`);
    check(!seen.has(c.path), `${c.path}: listed twice in one file set`);
    seen.add(c.path);
    if (!("remove" in c)) {
      check(Number.isInteger(c.mode) && c.mode >= 0 && c.mode <= 0o777, `${c.path}: mode ${octal(c.mode)} must be permission bits only (0000 to 0777)`);
      const size = typeof c.content === "string" ? Buffer.byteLength(c.content) : c.content.byteLength;
      check(size <= MAX_FILE_BYTES, `${c.path}: ${size} bytes is more than the ${MAX_FILE_BYTES} this writer accepts`);
    }
  }
  const dirs = [...new Set(changes.map((c) => dirname(c.path)))];
  for (const d of dirs) assertSecureDirectory(d);
  const plan: Planned[] = changes.map((c) => ({
    path: c.path,
    write:
      "remove" in c
        ? null
        : {
            content: typeof c.content === "string" ? Buffer.from(c.content) : Buffer.from(c.content),
            mode: c.mode,
            uid: resolveUid(c.owner, c.path),
            gid: resolveGid(c.group, c.path),
          },
    previous: readPrevious(c.path),
  }));

  const staged: Array<string | null> = [];
  let committed = 0;
  try {
    for (const p of plan) staged.push(p.write ? createStagedFile(p.path, p.write.content, p.write.mode, p.write.uid, p.write.gid) : null);
    for (const [i, p] of plan.entries()) {
      const tmp = staged[i];
      if (tmp !== null) renameSync(tmp, p.path);
      else if (p.previous) unlinkSync(p.path);
      committed = i + 1;
    }
    for (const d of dirs) fsyncDirectory(d);
    for (const p of plan) assertHolds(p.path, p.write, "after writing");
    if (o.verify) await o.verify();
  } catch (e) {
    const problems: string[] = [];
    for (const tmp of staged.slice(committed)) {
      if (tmp === null) continue;
      try {
        unlinkSync(tmp);
      } catch (u) {
        problems.push(`cannot remove ${tmp}: ${errCode(u)}`);
      }
    }
    for (const p of plan.slice(0, committed).reverse()) {
      try {
        restore(p);
      } catch (r) {
        problems.push(`cannot restore ${p.path}: ${(r as Error).message}`);
      }
    }
    try {
      for (const d of dirs) fsyncDirectory(d);
      for (const p of plan.slice(0, committed)) assertHolds(p.path, p.previous, "after restoring");
    } catch (r) {
      problems.push((r as Error).message);
    }
    if (problems.length) {
      throw new SafeWriteError(
        `${(e as Error).message}\nand restoring the previous files failed, so they may be half-updated (${plan.map((p) => p.path).join(", ")}):\n  ${problems.join("\n  ")}`,
      );
    }
    throw e;
  }
}
