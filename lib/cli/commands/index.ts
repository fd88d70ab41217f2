/** Every `sd-trt` command, in the order `--help` lists them. */
import type { CommandModule } from "yargs";
import generate from "./generate.js";
import serve from "./serve.js";
import worker from "./worker.js";
import bench from "./bench.js";
import build from "./build.js";
import doctor from "./doctor.js";
import tokenize from "./tokenize.js";
import convert from "./convert.js";

// biome-ignore lint/suspicious/noExplicitAny: each command has its own argument type; yargs takes them as one list
export const commands: CommandModule<any, any>[] = [generate, serve, worker, bench, build, convert, doctor, tokenize];
