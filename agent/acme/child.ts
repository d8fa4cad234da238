/**
 * The ACME child (bundled alone as dist/fipd-acme.cjs): one order, then exit. fipd's leader starts
 * it only when a certificate is missing or due, so acme-client's ~1 MB of code and ~29 MB of memory
 * are spent minutes a quarter, not all the time in the agent (which must stay under 1 MiB and its
 * memory target).
 *
 * Reads the order on stdin (agent/acme/protocol.ts), writes JSON lines on stdout. acme-client is
 * tamed so that every wait is bounded and owned by fipd:
 * - each request has `requestTimeoutMs`;
 * - its own retries of failed requests are off (`retryMaxAttempts: 0`): it would sleep out a
 *   Retry-After of hours inside one request. A 429 comes back to fipd as `rateLimited` with the
 *   Retry-After, and fipd waits it out without a process;
 * - its challenge self-check is off (`skipChallengeVerification`): it would fetch the token through
 *   the Reserved IP from the droplet itself, a hairpin DigitalOcean does not route;
 * - the status polls of one step stop after about `stepTimeoutMs`.
 * fipd kills the child at its order deadline, and the child exits when its stdin closes (fipd gone).
 *
 * Never prints a key: errors are reduced to one printable line of acme-client's message and the
 * CA's problem type.
 */
import { createPrivateKey } from "node:crypto";
import { Agent } from "node:https";
import * as acme from "acme-client";
import { printable } from "../schema.js";
import {
  lineSplitter,
  MAX_INPUT_LINE_BYTES,
  MAX_REASON_CHARS,
  OrderRequestSchema,
  parseLine,
  PublishedSchema,
  type ChildLine,
  type OrderRequest,
} from "./protocol.js";

function emit(line: ChildLine): void {
  process.stdout.write(JSON.stringify(line) + "\n");
}

/** The last problem the CA answered (status, RFC 8555 type, Retry-After): acme-client's errors keep only the detail. */
let lastProblem: { status: number; type: string; retryAfterS?: number } | null = null;

function retryAfterSeconds(header: unknown): number | undefined {
  if (typeof header !== "string") return undefined;
  const s = /^\s*\d{1,9}\s*$/.test(header) ? Number(header) : (Date.parse(header) - Date.now()) / 1000;
  return Number.isFinite(s) ? Math.max(0, Math.min(30 * 86_400, Math.ceil(s))) : undefined;
}

function configureHttp(o: OrderRequest): void {
  const settings = acme.axios.defaults as unknown as { acmeSettings: { retryMaxAttempts: number }; timeout: number; httpsAgent?: Agent };
  settings.acmeSettings.retryMaxAttempts = 0;
  settings.timeout = o.requestTimeoutMs;
  if (o.directoryCaPem) settings.httpsAgent = new Agent({ ca: o.directoryCaPem, keepAlive: true });
  // acme-client's own error handler reads `error.response.config`, which a network error (refused,
  // timed out) has not: it throws a TypeError that hides the cause. Run first and turn such an error
  // into one without `config`, which that handler passes on untouched.
  const responseInterceptors = acme.axios.interceptors.response as unknown as { handlers: unknown[] };
  responseInterceptors.handlers.unshift({
    fulfilled: (r: unknown) => r,
    rejected: (e: { response?: unknown; code?: string; message?: string }) => {
      if (e?.response) return Promise.reject(e as Error);
      return Promise.reject(Object.assign(new Error(`${e?.code ? `${e.code}: ` : ""}${e?.message ?? "request failed"}`), { code: e?.code }));
    },
    synchronous: false,
    runWhen: null,
  });
  acme.axios.interceptors.response.use((r) => {
    if (r.status >= 400) {
      const data = r.data as { type?: unknown } | undefined;
      lastProblem = { status: r.status, type: typeof data?.type === "string" ? data.type : "", retryAfterS: retryAfterSeconds(r.headers["retry-after"]) };
    }
    return r;
  });
}

/** Waits for fipd's `published` line for each token. */
class Acks {
  private readonly done = new Set<string>();
  private readonly waiting = new Map<string, () => void>();
  ack(token: string): void {
    this.done.add(token);
    this.waiting.get(token)?.();
  }
  wait(token: string, timeoutMs: number): Promise<void> {
    if (this.done.has(token)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`fipd did not confirm the challenge token was published within ${timeoutMs} ms`)), timeoutMs);
      this.waiting.set(token, () => {
        clearTimeout(t);
        resolve();
      });
    });
  }
}

/** acme-client imports keys as PKCS#8 only; the stack's @pulumi/tls keys are SEC1 ("EC PRIVATE KEY"). */
const pkcs8 = (pem: string, what: string): string => {
  try {
    return createPrivateKey(pem).export({ type: "pkcs8", format: "pem" }) as string;
  } catch {
    throw new Error(`the ${what} is not a PEM private key`);
  }
};

async function order(o: OrderRequest, acks: Acks): Promise<string> {
  configureHttp(o);
  const accountKey = pkcs8(o.accountKeyPem, "account key");
  const certificateKey = pkcs8(o.certificateKeyPem, "certificate key");
  // Status polls: min 1 s, doubling, at most 5 s apart, as many as fit in stepTimeoutMs.
  const backoffMax = Math.min(5_000, Math.max(100, Math.floor(o.stepTimeoutMs / 4)));
  const client = new acme.Client({
    directoryUrl: o.directoryUrl,
    accountKey,
    externalAccountBinding: o.eab ? { kid: o.eab.kid, hmacKey: o.eab.hmacKey } : undefined,
    backoffMin: Math.min(1_000, backoffMax),
    backoffMax,
    backoffAttempts: Math.max(1, Math.floor(o.stepTimeoutMs / backoffMax)),
  });
  emit({ kind: "step", step: "account" });
  const [, csr] = await acme.crypto.createCsr({ commonName: o.domains[0], altNames: o.domains }, certificateKey);
  const steps = new Set<string>();
  const step = (s: "order" | "validation" | "finalize") => {
    if (!steps.has(s)) emit({ kind: "step", step: s });
    steps.add(s);
  };
  return client.auto({
    csr,
    email: o.email,
    termsOfServiceAgreed: true,
    skipChallengeVerification: true,
    challengePriority: ["http-01"],
    challengeCreateFn: async (authz, challenge, keyAuthorization) => {
      step("order");
      if (challenge.type !== "http-01") throw new Error(`the CA offers no http-01 challenge for ${authz.identifier.value}`);
      emit({ kind: "challenge", domain: authz.identifier.value, token: challenge.token, keyAuthorization });
      await acks.wait(challenge.token, o.stepTimeoutMs);
      step("validation");
    },
    // Tokens expire in fipd's store on their own; nothing to remove here.
    challengeRemoveFn: async () => undefined,
  });
}

function errorLine(e: unknown): ChildLine {
  const message = printable((e as Error)?.message ?? String(e), MAX_REASON_CHARS);
  const p = lastProblem;
  const rateLimited = p?.type === "urn:ietf:params:acme:error:rateLimited" || p?.status === 429;
  const code = (e as NodeJS.ErrnoException)?.code;
  const reason = [
    code && !message.includes(code) ? `${code}:` : "",
    message || "unknown error",
    p?.type ? `(${p.type.replace("urn:ietf:params:acme:error:", "")})` : "",
  ]
    .filter(Boolean)
    .join(" ");
  return {
    kind: "error",
    reason: printable(reason, MAX_REASON_CHARS),
    ...(p?.retryAfterS !== undefined ? { retryAfterS: p.retryAfterS } : {}),
    ...(rateLimited ? { rateLimited: true } : {}),
  };
}

function main(): void {
  const acks = new Acks();
  let request: OrderRequest | null = null;
  let finished = false;
  const finish = (line: ChildLine, code: number) => {
    if (finished) return;
    finished = true;
    emit(line);
    process.exitCode = code;
    // Ends the keep-alive sockets and stdin's hold on the loop.
    setImmediate(() => process.exit(code));
  };
  const onLine = (line: string) => {
    try {
      if (!request) {
        request = parseLine(OrderRequestSchema, line, MAX_INPUT_LINE_BYTES, "order on stdin");
        order(request, acks).then(
          (pem) => finish({ kind: "issued", pem }, 0),
          (e: unknown) => finish(errorLine(e), 1),
        );
      } else acks.ack(parseLine(PublishedSchema, line, 1024, "stdin").token);
    } catch (e) {
      finish({ kind: "error", reason: printable((e as Error).message, MAX_REASON_CHARS) }, 2);
    }
  };
  process.stdin.on(
    "data",
    lineSplitter(MAX_INPUT_LINE_BYTES, onLine, (bytes) => finish({ kind: "error", reason: `stdin: a line of ${bytes} bytes, too long` }, 2)),
  );
  process.stdin.on("end", () => finish({ kind: "error", reason: "stdin closed: fipd stopped the order" }, 3));
}

main();
