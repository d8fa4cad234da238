/**
 * The package's entry (package.json `main`): the components only, no side effects. `index.ts` at the
 * root is the `pulumi up` program and reads stack config when imported, so it cannot be the entry.
 * Pulumi's Node.js plugin runner loads this module and serves every component it exports through
 * componentProviderHost (see PulumiPlugin.yaml): export here only components whose args infer.
 */
export { Cluster, type ClusterArgs, type LoadBalancerInfo } from "./public.js";
