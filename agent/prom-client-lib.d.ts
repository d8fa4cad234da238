// Types for the parts of prom-client the agent imports one by one (agent/metrics.ts says why): the
// package types only its index, and each of these files exports what the index re-exports.
declare module "prom-client/lib/registry" {
  import { Registry } from "prom-client";
  export = Registry;
}
declare module "prom-client/lib/counter" {
  import { Counter } from "prom-client";
  export = Counter;
}
declare module "prom-client/lib/gauge" {
  import { Gauge } from "prom-client";
  export = Gauge;
}
declare module "prom-client/lib/histogram" {
  import { Histogram } from "prom-client";
  export = Histogram;
}
/** One of prom-client's default metrics: registers its gauges on the registry, named with the prefix. */
declare module "prom-client/lib/metrics/*" {
  import type { Registry } from "prom-client";
  const register: (registry: Registry, config: { prefix?: string }) => void;
  export = register;
}
