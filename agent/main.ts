// The bundle's entry point: `node fipd.cjs <command>`.
import { runCli } from "./cli.js";

runCli(process.argv.slice(2));
