/**
 * Local HAProxy health: GET its health endpoint every `intervalMs`; `rise` passes in a row make it
 * healthy, `fall` failures in a row unhealthy (HAProxy's own check semantics). Starts unhealthy.
 */
import { HttpGetError, httpGet } from "./http-get.js";

export interface HealthChecker {
  start(): void;
  stop(): void;
  healthy(): boolean;
}

export function createHealthChecker(o: {
  url: string;
  intervalMs: number;
  timeoutMs: number;
  rise: number;
  fall: number;
  onChange: (healthy: boolean, detail: string) => void;
}): HealthChecker {
  let state: boolean | null = null;
  let passes = 0;
  let fails = 0;
  let timer: NodeJS.Timeout | null = null;
  let stopped = true;

  const probe = async (): Promise<[boolean, string]> => {
    try {
      const res = await httpGet(o.url, o.timeoutMs);
      return res.status >= 200 && res.status < 300 ? [true, `HTTP ${res.status}`] : [false, `HTTP ${res.status} from ${o.url}`];
    } catch (e) {
      return [false, `${e instanceof HttpGetError ? e.reason : (e as Error).message} (${o.url})`];
    }
  };

  const loop = async () => {
    if (stopped) return;
    const [ok, detail] = await probe();
    if (stopped) return;
    if (ok) {
      passes++;
      fails = 0;
      if (state !== true && passes >= o.rise) {
        state = true;
        o.onChange(true, detail);
      }
    } else {
      fails++;
      passes = 0;
      if (state !== false && fails >= o.fall) {
        state = false;
        o.onChange(false, detail);
      }
    }
    timer = setTimeout(() => void loop(), o.intervalMs); // never overlapping: the next probe starts after this one
  };

  return {
    start() {
      if (!stopped) return;
      stopped = false;
      void loop();
    },
    stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
    },
    healthy: () => state === true,
  };
}
