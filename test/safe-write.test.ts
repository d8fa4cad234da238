/**
 * agent/safe-write.ts: file sets installed all or nothing, never through a planted link, never into
 * a directory another user controls. Runs as root (chown to `nobody`, as a deploy does to `fipd`).
 */
import { chmodSync, chownSync, linkSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { createStagedFile, ensureSecureDirectory, installFileSet, lookupGroup, lookupUser, SafeWriteError } from "../agent/safe-write.js";

/** When set, randomBytes returns these bytes: the "unpredictable" temporary name becomes known to the test. */
const predictable = vi.hoisted(() => ({ bytes: null as Buffer | null }));
vi.mock("node:crypto", async (importOriginal) => {
  const real = await importOriginal<typeof import("node:crypto")>();
  return { ...real, randomBytes: (n: number) => (predictable.bytes ? predictable.bytes.subarray(0, n) : real.randomBytes(n)) };
});

const NOBODY = lookupUser("nobody")!;
const NOGROUP = lookupGroup("nogroup")!;

let root = "";
let dir = "";
/** A file outside the target directory that a planted link points at. */
let victim = "";

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), "halb-safe-write-"));
  dir = join(root, "etc");
  mkdirSync(dir, { mode: 0o755 });
  victim = join(root, "victim");
  writeFileSync(victim, "victim's own bytes\n", { mode: 0o644 });
  predictable.bytes = null;
});
afterEach(() => {
  predictable.bytes = null;
  rmSync(root, { recursive: true, force: true });
});

const mode = (p: string) => statSync(p).mode & 0o7777;
const victimUntouched = () => {
  const st = statSync(victim);
  expect(readFileSync(victim, "utf8")).toBe("victim's own bytes\n");
  expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o644, 0, 0]);
};

describe("installFileSet", () => {
  it("installs every file with the mode, owner and group asked, and leaves no temporary file", async () => {
    if (!NOBODY || NOGROUP === null) throw new Error("this test needs the user nobody and the group nogroup");
    await installFileSet([
      { path: join(dir, "site.pem"), content: "CERT\n", mode: 0o640, group: "nogroup" },
      { path: join(dir, "secret"), content: "s3cret\n", mode: 0o600, owner: "nobody", group: NOGROUP },
      { path: join(dir, "haproxy.cfg"), content: "global\n", mode: 0o644 },
    ]);
    expect([mode(join(dir, "site.pem")), statSync(join(dir, "site.pem")).uid, statSync(join(dir, "site.pem")).gid]).toEqual([0o640, 0, NOGROUP]);
    expect([mode(join(dir, "secret")), statSync(join(dir, "secret")).uid, statSync(join(dir, "secret")).gid]).toEqual([0o600, NOBODY.uid, NOGROUP]);
    expect([mode(join(dir, "haproxy.cfg")), statSync(join(dir, "haproxy.cfg")).uid]).toEqual([0o644, 0]);
    expect(readFileSync(join(dir, "secret"), "utf8")).toBe("s3cret\n");
    expect(readdirSync(dir).sort()).toEqual(["haproxy.cfg", "secret", "site.pem"]);
  });

  it("refuses a symbolic link planted at a target: the link's target is untouched and nothing of the set is written", async () => {
    symlinkSync(victim, join(dir, "peer.key"));
    await expect(
      installFileSet([
        { path: join(dir, "token"), content: "t\n", mode: 0o600 },
        { path: join(dir, "peer.key"), content: "new key\n", mode: 0o600, owner: "nobody" },
      ]),
    ).rejects.toThrow(new RegExp(`${join(dir, "peer.key")} is a symbolic link \\(to ${victim}\\); refusing`));
    victimUntouched();
    expect(readdirSync(dir)).toEqual(["peer.key"]);
  });

  it("never writes through a link planted at a temporary name: the old predictable one, or the random one if guessed", async () => {
    const target = join(dir, "peer.key");
    symlinkSync(victim, `${target}.tmp-${process.pid}`);
    await installFileSet([{ path: target, content: "k1\n", mode: 0o600, owner: "nobody" }]);
    victimUntouched();
    expect(readFileSync(target, "utf8")).toBe("k1\n");

    // Suppose an attacker guessed the random name: O_CREAT|O_EXCL|O_NOFOLLOW refuses it.
    predictable.bytes = Buffer.alloc(32, 0xab);
    symlinkSync(victim, join(dir, `.peer.key.${"ab".repeat(12)}.tmp`));
    await expect(installFileSet([{ path: target, content: "k2\n", mode: 0o600, owner: "nobody" }])).rejects.toThrow(
      /something already exists at the temporary name .*\.peer\.key\.(ab){12}\.tmp \(a planted file or link\?\); refusing/,
    );
    victimUntouched();
    expect(readFileSync(target, "utf8")).toBe("k1\n");
  });

  it("createStagedFile alone: an existing file or link at the name it draws is an error, never opened", () => {
    predictable.bytes = Buffer.alloc(32, 0x01);
    const name = join(dir, `.f.${"01".repeat(12)}.tmp`);
    writeFileSync(name, "planted\n", { mode: 0o666 });
    expect(() => createStagedFile(join(dir, "f"), Buffer.from("x"), 0o600, 0, 0)).toThrow(SafeWriteError);
    expect(readFileSync(name, "utf8")).toBe("planted\n");
  });

  it("refuses a directory writable by others, by its group, owned by another user, or reached through a link", async () => {
    const write = () => installFileSet([{ path: join(dir, "token"), content: "t\n", mode: 0o600 }]);
    chmodSync(dir, 0o777);
    await expect(write()).rejects.toThrow(`the directory ${dir} is writable by group or others (mode 0777)`);
    chmodSync(dir, 0o775);
    await expect(write()).rejects.toThrow(`the directory ${dir} is writable by group or others (mode 0775)`);
    // Sticky does not save the target directory itself: another user could still create names in it.
    chmodSync(dir, 0o1777);
    await expect(write()).rejects.toThrow(/is writable by group or others \(mode 1777\)/);
    chmodSync(dir, 0o755);
    chownSync(dir, NOBODY.uid, NOGROUP);
    await expect(write()).rejects.toThrow(`the directory ${dir} is owned by uid ${NOBODY.uid}, not root`);
    chownSync(dir, 0, 0);
    // An ancestor another user owns is as bad: it could swap the whole directory.
    chownSync(root, NOBODY.uid, NOGROUP);
    await expect(write()).rejects.toThrow(`the directory ${root} is owned by uid ${NOBODY.uid}, not root`);
    chownSync(root, 0, 0);
    symlinkSync(dir, join(root, "link"));
    await expect(installFileSet([{ path: join(root, "link", "token"), content: "t\n", mode: 0o600 }])).rejects.toThrow(/is reached through a symbolic link/);
    expect(readdirSync(dir)).toEqual([]);
    await write();
    expect(readFileSync(join(dir, "token"), "utf8")).toBe("t\n");
  });

  it("refuses a target hard-linked to another file, and an unknown owner, before writing anything", async () => {
    linkSync(victim, join(dir, "cert.pem"));
    await expect(installFileSet([{ path: join(dir, "cert.pem"), content: "x", mode: 0o600 }])).rejects.toThrow(/has 2 hard links/);
    await expect(installFileSet([{ path: join(dir, "other.pem"), content: "x", mode: 0o600, owner: "halb-no-such-user" }])).rejects.toThrow(
      `${join(dir, "other.pem")}: owner "halb-no-such-user" is not a user on this host`,
    );
    expect(readdirSync(dir)).toEqual(["cert.pem"]);
    victimUntouched();
  });

  it("a failing verify restores the previous set: contents, modes and owners back, new files removed, removed files back", async () => {
    const a = join(dir, "a.pem");
    const b = join(dir, "b.key");
    const gone = join(dir, "old.pem");
    const fresh = join(dir, "new.pem");
    await installFileSet([
      { path: a, content: "A1\n", mode: 0o640, group: "nogroup" },
      { path: b, content: "B1\n", mode: 0o600, owner: "nobody", group: "nogroup" },
      { path: gone, content: "OLD\n", mode: 0o644 },
    ]);
    const before = () => [a, b, gone].map((p) => ({ p, text: readFileSync(p, "utf8"), mode: mode(p), uid: statSync(p).uid, gid: statSync(p).gid }));
    const previous = before();
    let seenDuringVerify: string[] = [];
    const refusal = new Error("haproxy -c: unable to load certificate");
    await expect(
      installFileSet(
        [
          { path: a, content: "A2 is longer\n", mode: 0o600 },
          { path: b, content: "B2\n", mode: 0o644 },
          { path: fresh, content: "NEW\n", mode: 0o640 },
          { path: gone, remove: true },
        ],
        {
          verify: () => {
            seenDuringVerify = readdirSync(dir).sort();
            expect(readFileSync(a, "utf8")).toBe("A2 is longer\n");
            throw refusal;
          },
        },
      ),
    ).rejects.toBe(refusal);
    // verify ran with the whole new set in place...
    expect(seenDuringVerify).toEqual(["a.pem", "b.key", "new.pem"]);
    // ...and afterwards the previous set is back, exactly.
    expect(before()).toEqual(previous);
    expect(readdirSync(dir).sort()).toEqual(["a.pem", "b.key", "old.pem"]);
  });

  it("a verify that passes keeps the new set", async () => {
    await installFileSet([{ path: join(dir, "a"), content: "1", mode: 0o600 }]);
    await installFileSet([{ path: join(dir, "a"), content: "2", mode: 0o640 }], { verify: async () => Promise.resolve() });
    expect([readFileSync(join(dir, "a"), "utf8"), mode(join(dir, "a"))]).toEqual(["2", 0o640]);
  });
});

describe("ensureSecureDirectory", () => {
  it("creates a missing directory with exactly the mode asked (whatever the umask), then checks it", () => {
    const old = process.umask(0o077);
    try {
      ensureSecureDirectory(join(dir, "fipd"), 0o755);
    } finally {
      process.umask(old);
    }
    expect(mode(join(dir, "fipd"))).toBe(0o755);
    chmodSync(join(dir, "fipd"), 0o757);
    expect(() => ensureSecureDirectory(join(dir, "fipd"), 0o755)).toThrow(/writable by group or others/);
  });
});
