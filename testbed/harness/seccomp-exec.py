#!/usr/bin/python3
"""
Loads the seccomp filters that systemd derives from fipd.service, then execs the agent: the part of
the unit's sandbox that unit-sandbox.ts cannot build from mounts and setpriv. It uses libseccomp
(python3-seccomp), the library systemd itself builds these filters with.

  seccomp-exec.py SPEC_JSON -- COMMAND [ARG...]

SPEC_JSON (written by unit-sandbox.ts from the unit):
  errno              SystemCallErrorNumber: what a filtered call returns
  allow              SystemCallFilter, resolved to system call names (allow-list)
  addressFamilies    RestrictAddressFamilies, as numbers (allow-list); null when unrestricted
  restrictNamespaces RestrictNamespaces=yes
  restrictRealtime   RestrictRealtime=yes
  restrictSUIDSGID   RestrictSUIDSGID=yes
  lockPersonality    LockPersonality=yes

Fails (exit 2) with a message on a bad spec; never execs the command without every filter loaded.
"""
import errno
import json
import os
import stat
import sys

import seccomp

CLONE_NEW_FLAGS = [0x00020000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000, 0x00000080]
SCHED_REALTIME = [1, 2, 6]  # SCHED_FIFO, SCHED_RR, SCHED_DEADLINE
AF_MAX = 46
PER_LINUX = 0


def fail(message):
    sys.stderr.write(f"seccomp-exec: {message}\n")
    sys.exit(2)


def restrictions(spec):
    """Everything but the allow-list: one filter that allows by default, as systemd adds them."""
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    families = spec.get("addressFamilies")
    if families is not None:
        for family in range(AF_MAX):
            if family not in families:
                f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.EQ, family))
        f.add_rule(seccomp.ERRNO(errno.EAFNOSUPPORT), "socket", seccomp.Arg(0, seccomp.GE, AF_MAX))
    if spec.get("restrictNamespaces"):
        for name in ("unshare", "setns"):
            f.add_rule(seccomp.ERRNO(errno.EPERM), name)
        for flag in CLONE_NEW_FLAGS:
            f.add_rule(seccomp.ERRNO(errno.EPERM), "clone", seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        # clone3 passes its flags in memory, where a filter cannot look: systemd answers ENOSYS so
        # that glibc falls back to clone, whose flags it can check.
        f.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
    if spec.get("restrictRealtime"):
        for policy in SCHED_REALTIME:
            f.add_rule(seccomp.ERRNO(errno.EPERM), "sched_setscheduler", seccomp.Arg(1, seccomp.EQ, policy))
    if spec.get("restrictSUIDSGID"):
        for name, mode_arg in (("chmod", 1), ("fchmod", 1), ("fchmodat", 2)):
            for bit in (stat.S_ISUID, stat.S_ISGID):
                f.add_rule(seccomp.ERRNO(errno.EPERM), name, seccomp.Arg(mode_arg, seccomp.MASKED_EQ, bit, bit))
    if spec.get("lockPersonality"):
        # Any other personality than Linux's fails (libseccomp takes one comparison per argument, so
        # a query with 0xffffffff fails too; neither Node.js nor glibc asks).
        f.add_rule(seccomp.ERRNO(errno.EPERM), "personality", seccomp.Arg(0, seccomp.NE, PER_LINUX))
    return f


def allow_list(spec):
    f = seccomp.SyscallFilter(seccomp.ERRNO(spec["errno"]))
    for name in spec["allow"]:
        # As systemd does, a call libseccomp does not know, or that this architecture does not have
        # (e.g. the 32-bit *_time64 calls), is skipped.
        try:
            f.add_rule(seccomp.ALLOW, name)
        except (ValueError, RuntimeError):
            pass
    return f


def main():
    if len(sys.argv) < 4 or sys.argv[2] != "--":
        fail("usage: seccomp-exec.py SPEC_JSON -- COMMAND [ARG...]")
    try:
        spec = json.loads(sys.argv[1])
    except json.JSONDecodeError as e:
        fail(f"SPEC_JSON is not JSON: {e}")
    if not isinstance(spec.get("errno"), int) or not isinstance(spec.get("allow"), list) or not spec["allow"]:
        fail('SPEC_JSON needs "errno" (a number) and "allow" (a non-empty list of system call names)')
    command = sys.argv[3:]
    # The permissive filter first: once the allow-list is loaded, seccomp(2) itself may be filtered.
    restrictions(spec).load()
    allow_list(spec).load()
    os.execv(command[0], command)


main()
